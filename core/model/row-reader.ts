// Reading row ranges of a tensor straight from its safetensors file: each read is the tensor's
// own byte range (never the whole file), through cached file handles into reused buffers.

import { closeSync, readSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { ModelFormatError } from '../errors.js';
import { openRegularFileSync } from './open-regular.js';
import { dtypeSize, type SourceDtype } from '../quant/dtype.js';

/** Rows per read: about this many input bytes, a multiple of 8 rows. */
export const CHUNK_BYTES = 2 << 20;

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
      let fd = this.fds.get(file);
      if (fd === undefined) this.fds.set(file, (fd = openRegularFileSync(file)));
      return (buf, off, len, pos) => readSync(fd!, buf, off, len, pos);
    }
    let fh = this.handles.get(file);
    if (!fh) this.handles.set(file, (fh = await open(file, 'r')));
    const h = fh;
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

