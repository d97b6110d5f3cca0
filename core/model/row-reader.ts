// Reading row ranges of a tensor straight from its safetensors file: each read is the tensor's
// own byte range (never the whole file), through cached file handles into reused buffers. The
// cache is a small LRU: a model of many shards read by long-lived threads holds a few fds, not
// one per file for ever.

import { closeSync, readSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { ModelFormatError } from '../errors.js';
import { openRegularFile, openRegularFileSync } from './open-regular.js';
import { dtypeSize, type SourceDtype } from '../quant/dtype.js';

/** Rows per read: about this many input bytes, a multiple of 8 rows. */
export const CHUNK_BYTES = 2 << 20;

/** Files a reader keeps open at once (the least recently read is closed first). */
export const MAX_OPEN_FILES = 4;

/** `key`'s value, made the most recently used. */
function recent<V>(map: Map<string, V>, key: string): V | undefined {
  const v = map.get(key);
  if (v !== undefined) {
    map.delete(key);
    map.set(key, v);
  }
  return v;
}

/** Add `v` as the most recently used, closing the least recently used beyond MAX_OPEN_FILES. */
function admit<V>(map: Map<string, V>, key: string, v: V, close: (old: V) => void): V {
  map.set(key, v);
  for (const [k, old] of map) {
    if (map.size <= MAX_OPEN_FILES) break;
    map.delete(k);
    close(old);
  }
  return v;
}

export interface Timings {
  readMs: number;
  kernelMs: number;
  hashMs: number;
  writeMs: number;
}

export const zeroTimings = (): Timings => ({ readMs: 0, kernelMs: 0, hashMs: 0, writeMs: 0 });

export interface TensorLocation {
  file: string;
  dataStart: number;
  dtype: SourceDtype;
  cols: number;
}

/**
 * Reads row ranges of tensors through cached file handles into reused buffers. `sync` reads block
 * the calling thread: right for a dedicated quantization thread, where a read from the page cache
 * is a memory copy the thread would otherwise wait for in libuv's queue anyway.
 */
export class RowReader {
  private handles = new Map<string, FileHandle>();
  private fds = new Map<string, number>();
  private buffer = Buffer.alloc(0);

  constructor(private readonly sync = false) {}

  /** Rows [rowStart, rowStart + rows) of a tensor; the bytes stay valid until the next read. */
  async read(loc: TensorLocation, rowStart: number, rows: number, timings: Timings): Promise<Uint8Array> {
    const rowBytes = loc.cols * dtypeSize(loc.dtype);
    const n = rows * rowBytes;
    if (this.buffer.byteLength < n) this.buffer = Buffer.allocUnsafeSlow(Math.max(n, CHUNK_BYTES));
    const buf = this.buffer;
    const readAt = await this.reader(loc.file);
    const t0 = performance.now();
    let got = 0;
    while (got < n) {
      const bytesRead = await readAt(buf, got, n - got, loc.dataStart + rowStart * rowBytes + got);
      if (bytesRead === 0) {
        throw new ModelFormatError(`${loc.file}: file ends before the tensor's data (truncated after it was scanned?)`, loc.file);
      }
      got += bytesRead;
    }
    timings.readMs += performance.now() - t0;
    return buf.subarray(0, n);
  }

  private async reader(file: string): Promise<(buf: Buffer, off: number, len: number, pos: number) => number | Promise<number>> {
    if (this.sync) {
      const fd = recent(this.fds, file) ?? admit(this.fds, file, openRegularFileSync(file), closeSync);
      return (buf, off, len, pos) => readSync(fd, buf, off, len, pos);
    }
    // reads are one at a time (one buffer), so an evicted handle is never being read
    const h = recent(this.handles, file) ?? admit(this.handles, file, await openRegularFile(file), (old) => void old.close().catch(() => undefined));
    return async (buf, off, len, pos) => (await h.read(buf, off, len, pos)).bytesRead;
  }

  async close(): Promise<void> {
    for (const fh of this.handles.values()) await fh.close().catch(() => undefined);
    for (const fd of this.fds.values()) closeSync(fd);
    this.handles.clear();
    this.fds.clear();
  }
}

export function chunkRows(cols: number, dtype: SourceDtype): number {
  const rows = Math.floor(CHUNK_BYTES / Math.max(1, cols * dtypeSize(dtype)));
  return Math.max(8, rows - (rows % 8));
}

