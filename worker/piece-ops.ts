// The operations a quantization thread performs on a piece of a layer — a range of rows, or the
// whole layer for passthrough and finalization. They run inside worker threads (quant-thread.ts)
// but are plain async functions, so the same code runs anywhere.
//
// Pieces start at a multiple of 8 rows, so each one's packed codes start at a byte boundary and
// threads write disjoint bytes of the layer's shared output buffers.

import { createHash } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import type { QuantKernel } from '../native/kernel-api.js';
import { decodeToF32 } from '../core/quant/dtype.js';
import { fitsF16, f32ToBf16Bits, f32ToF16Bits, F16_TABLE, bf16BitsToF32 } from '../core/quant/float16.js';
import { STATS_PER_ROW, groupsPerRow, type QuantBits } from '../core/quant/reference.js';
import { encodeShard } from '../core/format/arrow-file.js';
import type { LayerRecord, QuantType } from '../core/format/layer-schema.js';
import { RowReader, chunkRows, type TensorLocation, type Timings } from '../core/model/row-reader.js';
import { layerStats, type LayerStats } from '../core/quant/layer-stats.js';

/** Iterate [start, end) row chunks of a piece, reading chunk k+1 while the caller works on chunk k. */
async function forEachChunk(
  reader: RowReader,
  loc: TensorLocation,
  rowStart: number,
  rowEnd: number,
  timings: Timings,
  work: (bytes: Uint8Array, r0: number, rows: number) => Promise<boolean>,
): Promise<void> {
  const step = chunkRows(loc.cols, loc.dtype);
  let slot: 0 | 1 = 0;
  let next: Promise<Uint8Array> | null = rowStart < rowEnd ? reader.read(loc, rowStart, Math.min(step, rowEnd - rowStart), slot, timings) : null;
  for (let r0 = rowStart; r0 < rowEnd; r0 += step) {
    const rows = Math.min(step, rowEnd - r0);
    const bytes = await next!;
    slot = slot === 0 ? 1 : 0;
    const r1 = r0 + step;
    next = r1 < rowEnd ? reader.read(loc, r1, Math.min(step, rowEnd - r1), slot, timings) : null;
    if (!(await work(bytes, r0, rows))) {
      await next?.catch(() => undefined);
      return;
    }
  }
}

/** out[j] = max over the piece's rows of |w_ij| (spatial equalization needs the weight's column maxima). */
export async function columnAbsMaxPiece(kernel: QuantKernel, reader: RowReader, loc: TensorLocation, rowStart: number, rowEnd: number, timings: Timings): Promise<Float32Array> {
  const out = new Float32Array(loc.cols);
  await forEachChunk(reader, loc, rowStart, rowEnd, timings, async (bytes, _r0, rows) => {
    const t0 = performance.now();
    kernel.columnAbsMax(bytes, loc.dtype, rows, loc.cols, out);
    timings.kernelMs += performance.now() - t0;
    return true;
  });
  return out;
}

export interface QuantizePieceArgs extends TensorLocation {
  rowStart: number;
  rowEnd: number;
  bits: QuantBits;
  groupSize: number;
  refine: boolean;
  colScale: Float32Array | null;
  /** the whole layer's outputs (shared between threads) */
  packed: Uint8Array;
  scales: Uint16Array;
  zeroPoints: Uint16Array;
  rowStats: Float64Array;
}

/** Quantize rows [rowStart, rowEnd) into the layer's buffers; −1, or the layer-level index of the first non-finite value. */
export async function quantizePiece(kernel: QuantKernel, reader: RowReader, a: QuantizePieceArgs, timings: Timings): Promise<number> {
  const gpr = groupsPerRow(a.cols, a.groupSize);
  let bad = -1;
  await forEachChunk(reader, a, a.rowStart, a.rowEnd, timings, async (src, r0, rows) => {
    const byte0 = (r0 * a.cols * a.bits) / 8;
    const t0 = performance.now();
    const idx = await kernel.quantize(
      { src, dtype: a.dtype, rows, cols: a.cols, bits: a.bits, groupSize: a.groupSize, refine: a.refine, colScale: a.colScale },
      {
        packed: a.packed.subarray(byte0, byte0 + Math.ceil((rows * a.cols * a.bits) / 8)),
        scales: a.scales.subarray(r0 * gpr, (r0 + rows) * gpr),
        zeroPoints: a.zeroPoints.subarray(r0 * gpr, (r0 + rows) * gpr),
        rowStats: a.rowStats.subarray(r0 * STATS_PER_ROW, (r0 + rows) * STATS_PER_ROW),
      },
    );
    timings.kernelMs += performance.now() - t0;
    if (idx >= 0) {
      bad = r0 * a.cols + idx;
      return false;
    }
    return true;
  });
  return bad;
}

export interface PassthroughResult {
  data: Uint8Array;
  quantType: QuantType;
  stats: LayerStats;
}

/**
 * A layer kept as a float (format.md): F16/BF16 bytes unchanged; F32 stored as f16 when every
 * value is finite and fits, else as bf16. Statistics compare the stored values with the source.
 */
export async function passthroughLayer(reader: RowReader, loc: TensorLocation, rows: number, timings: Timings): Promise<PassthroughResult> {
  const bytes = Uint8Array.from(await reader.read(loc, 0, rows, 0, timings));
  if (loc.dtype !== 'F32') {
    const values = decodeToF32(bytes, loc.dtype);
    return { data: bytes, quantType: loc.dtype === 'F16' ? 'f16' : 'bf16', stats: layerStats(values, values) };
  }
  const values = decodeToF32(bytes, 'F32');
  const asF16 = fitsF16(values);
  const out = new Uint16Array(values.length);
  const back = new Float32Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const h = asF16 ? f32ToF16Bits(values[i]!) : f32ToBf16Bits(values[i]!);
    out[i] = h;
    back[i] = asF16 ? F16_TABLE[h]! : bf16BitsToF32(h);
  }
  return { data: new Uint8Array(out.buffer), quantType: asF16 ? 'f16' : 'bf16', stats: layerStats(values, back) };
}

/** Hash the data, fill in the quality columns, encode the shard and write it atomically. */
export async function writeShard(record: Omit<LayerRecord, 'data_sha256'>, path: string, timings: Timings): Promise<{ bytes: number; sha256: string }> {
  const t0 = performance.now();
  const sha256 = createHash('sha256').update(record.data).digest('hex');
  const t1 = performance.now();
  timings.hashMs += t1 - t0;
  const shard = encodeShard({ ...record, data_sha256: sha256 });
  const tmp = `${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
  try {
    const fh = await open(tmp, 'w');
    try {
      let off = 0;
      while (off < shard.byteLength) off += (await fh.write(shard, off, shard.byteLength - off, off)).bytesWritten;
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  timings.writeMs += performance.now() - t1;
  return { bytes: shard.byteLength, sha256 };
}

