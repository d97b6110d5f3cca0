// The output file's writes. ArrowQuant writes each byte of its output once and never reads it
// back, so where the file system allows it the file is opened with O_DIRECT: bytes are copied
// into a reused, page-aligned window and written from there in large aligned blocks straight to
// the device, past the page cache. A buffered write costs the writer a copy into freshly
// allocated page-cache pages; on this VM that is 2–3 s of system time per GB for pages the
// machine has not touched before or has handed back (its kernel pages out cold memory with
// DAMON) — `dd` of 600 MB: 1.2–2.0 s — and 0.07 s per GB with O_DIRECT.
// Writes that are not sequential (the schema region at the start, rewriting bytes of an
// abandoned upload) read back the blocks around them first, so the file behaves like any other.
//
// Bytes still in the window are in no file yet: flush() puts everything written so far into the
// file (what a crash of the process then keeps), and the caller calls it before it counts a layer
// as written. Where O_DIRECT is refused (a file system without it) or ARROW_QUANT_DIRECT_IO=0,
// every write goes through the page cache, as with a plain file.

import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { ConfigError } from '../errors.js';

/** O_DIRECT's alignment of offsets, lengths and memory: the largest logical block size in use. */
const BLOCK = 4096;
/** Each of the window's two halves: one is filled while the other is on its way to the disk. */
const HALF = 4 << 20;
const WASM_PAGE = 64 << 10;
// (the project's TypeScript libraries leave out the WebAssembly namespace: only this is used)
declare const WebAssembly: { Memory: new (descriptor: { initial: number }) => { buffer: ArrayBuffer } };

/** Whether the output may be opened with O_DIRECT (ARROW_QUANT_DIRECT_IO=0 turns it off, 1 or unset leaves it on). */
export function directIoAllowed(env: NodeJS.ProcessEnv = process.env): boolean {
  const v = env.ARROW_QUANT_DIRECT_IO;
  if (v === undefined || v === '' || v === '1') return true;
  if (v === '0') return false;
  throw new ConfigError(`ARROW_QUANT_DIRECT_IO must be 0 or 1, got ${JSON.stringify(v.slice(0, 100))}`, 'ARROW_QUANT_DIRECT_IO', 'environment');
}

const roundDown = (n: number) => n - (n % BLOCK);
const roundUp = (n: number) => roundDown(n + BLOCK - 1);

export class OutputFile {
  /** The direct window (two halves of page-aligned memory), or null: writes go through the page cache. */
  private readonly halves: [Buffer, Buffer] | null;
  private readonly inFlight: [Promise<void> | null, Promise<void> | null] = [null, null];
  private cur: 0 | 1 = 0;
  /** File offset of the window's first byte (a multiple of BLOCK); -1: no window yet. */
  private base = -1;
  /** The window's bytes [dirtyFrom, dirtyTo) are newer than the file's. */
  private dirtyFrom = HALF;
  private dirtyTo = 0;
  /** The file's length as its writer sees it; the file itself may be longer by the padding of its last block. */
  private size: number;
  /** How far the file on disk reaches (padding included). */
  private physical: number;
  private chain: Promise<void> = Promise.resolve();
  private failure: unknown = null;

  private constructor(
    private readonly fh: FileHandle,
    direct: boolean,
    size: number,
  ) {
    this.size = size;
    this.physical = size;
    if (direct) {
      // WebAssembly memory is allocated page-aligned, which O_DIRECT needs of the buffers it writes from.
      const mem = Buffer.from(new WebAssembly.Memory({ initial: (2 * HALF) / WASM_PAGE }).buffer);
      this.halves = [mem.subarray(0, HALF), mem.subarray(HALF, 2 * HALF)];
    } else {
      this.halves = null;
    }
  }

  /** Whether writes bypass the page cache. */
  get direct(): boolean {
    return this.halves !== null;
  }

  /** A new, empty file at `path` (truncated if it exists). */
  static create(path: string): Promise<OutputFile> {
    return OutputFile.openAs(path, constants.O_RDWR | constants.O_CREAT | constants.O_TRUNC);
  }

  /** An existing file, to be written at any offset. */
  static existing(path: string): Promise<OutputFile> {
    return OutputFile.openAs(path, constants.O_RDWR);
  }

  private static async openAs(path: string, flags: number): Promise<OutputFile> {
    if (directIoAllowed()) {
      let fh: FileHandle | null = null;
      try {
        fh = await open(path, flags | constants.O_DIRECT, 0o644);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EINVAL') throw e;
      }
      if (fh) {
        const size = (await fh.stat()).size;
        // Some file systems open with O_DIRECT and refuse its writes: probe with one block past the end.
        const file = new OutputFile(fh, true, size);
        try {
          await fh.write(file.halves![0], 0, BLOCK, roundUp(size));
          await fh.truncate(size);
          return file;
        } catch (e) {
          await fh.close().catch(() => undefined);
          if ((e as NodeJS.ErrnoException).code !== 'EINVAL') throw e;
        }
        flags &= ~(constants.O_CREAT | constants.O_TRUNC); // it exists now; a refused probe wrote nothing
      }
    }
    const fh = await open(path, flags, 0o644);
    return new OutputFile(fh, false, (await fh.stat()).size);
  }

  /** Write `bytes` at `position` (writes take effect in the order they are called). */
  write(bytes: Uint8Array, position: number): Promise<void> {
    return this.writev([bytes], position);
  }

  /** Write consecutive `pieces` from `position` on, as one write. */
  writev(pieces: readonly Uint8Array[], position: number): Promise<void> {
    return this.serial(async () => {
      for (let at = position, p = 0; p < pieces.length; at += pieces[p]!.byteLength, p++) {
        if (this.halves) await this.writeDirect(pieces[p]!, at);
        else await writeAt(this.fh, pieces[p]!, at);
      }
    });
  }

  /** Everything written so far is in the file (not necessarily on the disk: see datasync). */
  flush(): Promise<void> {
    return this.serial(() => this.flushWindow());
  }

  /** Cut (or extend) the file to `length` bytes. */
  truncate(length: number): Promise<void> {
    return this.serial(async () => {
      await this.flushWindow();
      await this.fh.truncate(length);
      this.size = this.physical = length;
      this.base = -1; // the window may hold bytes past the new end
    });
  }

  /** The file's data is on the disk (fdatasync), as far as it was written before this call. */
  async datasync(): Promise<void> {
    await this.flush();
    await this.fh.datasync();
  }

  /** Everything is written, at the file's exact length, and on the disk (fsync). */
  sync(): Promise<void> {
    return this.serial(async () => {
      await this.settle();
      await this.fh.sync();
    });
  }

  /** Write what is left and close. */
  close(): Promise<void> {
    return this.serial(async () => {
      await this.settle();
      await this.fh.close();
    });
  }

  /** Close without writing what is left (the file is being thrown away); never throws. */
  async discard(): Promise<void> {
    this.failure ??= new Error('output file discarded');
    await Promise.all(this.inFlight.map((p) => p?.catch(() => undefined)));
    await this.fh.close().catch(() => undefined);
  }

  private serial(op: () => Promise<unknown>): Promise<void> {
    const run = this.chain.then(async () => {
      if (this.failure !== null) throw this.failure;
      await op();
    });
    this.chain = run.catch((e: unknown) => {
      this.failure ??= e;
    });
    return run;
  }

  /** Flushed, and the padding of the last block cut off: the file has its exact length. */
  private async settle(): Promise<void> {
    await this.flushWindow();
    if (this.physical > this.size) {
      await this.fh.truncate(this.size);
      this.physical = this.size;
    }
  }

  private async writeDirect(bytes: Uint8Array, position: number): Promise<void> {
    for (let done = 0; done < bytes.byteLength; ) {
      const at = position + done;
      if (this.base < 0 || at < this.base || at >= this.base + HALF) await this.moveWindow(roundDown(at));
      const w = this.halves![this.cur];
      const rel = at - this.base;
      const valid = this.valid();
      if (rel > valid) w.fill(0, valid, rel); // a hole past the end reads as zeros
      const n = Math.min(bytes.byteLength - done, HALF - rel);
      w.set(bytes.subarray(done, done + n), rel);
      this.dirtyFrom = Math.min(this.dirtyFrom, Math.min(rel, valid));
      this.dirtyTo = Math.max(this.dirtyTo, rel + n);
      this.size = Math.max(this.size, at + n);
      done += n;
      if (rel + n === HALF) await this.advance();
    }
  }

  /** Bytes of the window that hold the file's content. */
  private valid(): number {
    return Math.max(0, Math.min(HALF, this.size - this.base));
  }

  /** Start writing the window's dirty blocks; the write runs on while the caller goes on. */
  private writeWindow(): Promise<void> | null {
    if (this.base < 0 || this.dirtyFrom >= this.dirtyTo) return null;
    const from = roundDown(this.dirtyFrom);
    const to = Math.min(HALF, roundUp(this.dirtyTo));
    const position = this.base + from;
    this.physical = Math.max(this.physical, this.base + to);
    this.dirtyFrom = HALF;
    this.dirtyTo = 0;
    const half = this.cur;
    const p = writeAt(this.fh, this.halves![half].subarray(from, to), position).then(
      () => undefined,
      (e: unknown) => {
        this.failure ??= e;
        throw e;
      },
    );
    p.catch(() => undefined); // awaited before the half is reused, or by the next flush
    this.inFlight[half] = p;
    return p;
  }

  /** The window is full: it goes to the disk from its half while the next bytes fill the other one. */
  private async advance(): Promise<void> {
    this.writeWindow();
    const next = this.base + HALF;
    this.cur = this.cur === 0 ? 1 : 0;
    await this.inFlight[this.cur];
    this.inFlight[this.cur] = null;
    await this.load(next);
  }

  /** Every write issued, and done. */
  private async flushWindow(): Promise<void> {
    if (!this.halves) return;
    this.writeWindow();
    const [a, b] = this.inFlight;
    this.inFlight[0] = this.inFlight[1] = null;
    await a;
    await b;
  }

  private async moveWindow(base: number): Promise<void> {
    await this.flushWindow();
    await this.load(base);
  }

  /** Put the window at `base`, holding what the file has there (none of it when writing past the end, the usual case). */
  private async load(base: number): Promise<void> {
    if (base > this.size && this.physical > this.size) {
      // writing past the end leaves a hole, which must read as zeros, not as the last block's padding
      await this.fh.truncate(this.size);
      this.physical = this.size;
    }
    this.base = base;
    this.dirtyFrom = HALF;
    this.dirtyTo = 0;
    const have = this.valid();
    if (have === 0) return;
    const w = this.halves![this.cur];
    const want = Math.min(HALF, roundUp(have));
    let got = 0;
    while (got < want) {
      const { bytesRead } = await this.fh.read(w, got, want - got, base + got);
      got += bytesRead;
      if (bytesRead === 0 || bytesRead % BLOCK !== 0) break; // the end of the file (O_DIRECT reads on from aligned offsets only)
    }
    if (got < have) w.fill(0, got, have); // the file ended early: what a plain file would read as a hole
  }
}

export async function writeAt(fh: FileHandle, bytes: Uint8Array, position: number): Promise<number> {
  let done = 0;
  while (done < bytes.byteLength) {
    const { bytesWritten } = await fh.write(bytes, done, bytes.byteLength - done, position + done);
    done += bytesWritten;
  }
  return bytes.byteLength;
}
