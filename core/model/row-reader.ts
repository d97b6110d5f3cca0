// Reading row ranges of a tensor straight from its safetensors file: each read is the tensor's
// own byte range (never the whole file), through cached file handles into reused buffers.

import { open, type FileHandle } from 'node:fs/promises';
import { ModelFormatError } from '../errors.js';
import { dtypeSize, type SourceDtype } from '../quant/dtype.js';

/** Rows per read: about this many input bytes, a multiple of 8 rows. */
export const CHUNK_BYTES = 8 << 20;

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

/** Reads row ranges of tensors through cached file handles into a reused buffer. */
export class RowReader {
  private handles = new Map<string, FileHandle>();
  private buffers: Buffer[] = [Buffer.alloc(0), Buffer.alloc(0)];

  async read(loc: TensorLocation, rowStart: number, rows: number, slot: 0 | 1, timings: Timings): Promise<Uint8Array> {
    const rowBytes = loc.cols * dtypeSize(loc.dtype);
    const n = rows * rowBytes;
    if (this.buffers[slot]!.byteLength < n) this.buffers[slot] = Buffer.allocUnsafeSlow(Math.max(n, CHUNK_BYTES));
    const buf = this.buffers[slot]!;
    let fh = this.handles.get(loc.file);
    if (!fh) this.handles.set(loc.file, (fh = await open(loc.file, 'r')));
    const t0 = performance.now();
    let got = 0;
    while (got < n) {
      const { bytesRead } = await fh.read(buf, got, n - got, loc.dataStart + rowStart * rowBytes + got);
      if (bytesRead === 0) {
        throw new ModelFormatError(`${loc.file}: file ends before the tensor's data (truncated after it was scanned?)`, loc.file);
      }
      got += bytesRead;
    }
    timings.readMs += performance.now() - t0;
    return buf.subarray(0, n);
  }

  async close(): Promise<void> {
    for (const fh of this.handles.values()) await fh.close().catch(() => undefined);
    this.handles.clear();
  }
}

export function chunkRows(cols: number, dtype: SourceDtype): number {
  const rows = Math.floor(CHUNK_BYTES / Math.max(1, cols * dtypeSize(dtype)));
  return Math.max(8, rows - (rows % 8));
}

