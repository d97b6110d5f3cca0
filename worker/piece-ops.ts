// The operations a quantization thread performs on a piece of a layer — a range of rows, or the
// whole layer for passthrough and finalization. They run inside worker threads (quant-thread.ts)
// but are plain async functions, so the same code runs anywhere.
//
// Pieces start at a multiple of 8 rows, so each one's packed codes start at a byte boundary and
// threads write disjoint bytes of the layer's shared output buffers; format v2 pieces and chunks
// also start a super-group (v2RowAlign), so their integer params start at a byte too.

import { createHash } from 'node:crypto';
import type { QuantKernel } from '../core/quant/kernel.js';
import { decodeToF32 } from '../core/quant/dtype.js';
import { fitsF16, f32ToBf16Bits, f32ToF16Bits, F16_TABLE, bf16BitsToF32 } from '../core/quant/float16.js';
import { STATS_PER_ROW, groupsPerRow, type QuantBits } from '../core/quant/reference.js';
import { v2Offsets, v2RowAlign, type V2GroupSize } from '../core/quant/reference-v2.js';
import type { QuantType } from '../core/format/layer-schema.js';
import { RowReader, chunkRows, type TensorLocation, type Timings } from '../core/model/row-reader.js';
import { accumulateStats, statsToQuality } from '../core/quant/layer-stats.js';

/**
 * Row chunks [start, end) of a piece, in order. The threads read synchronously (a read from the
 * page cache is a copy the thread would wait for anyway); reading overlaps with quantizing
 * across threads, not within one. `work` returns false to stop early.
 */
async function forEachChunk(
  reader: RowReader,
  loc: TensorLocation,
  rowStart: number,
  rowEnd: number,
  timings: Timings,
  work: (bytes: Uint8Array, r0: number, rows: number) => Promise<boolean>,
  rowAlign = 8,
): Promise<void> {
  const rows0 = chunkRows(loc.cols, loc.dtype);
  const step = Math.max(rowAlign, rows0 - (rows0 % rowAlign));
  for (let r0 = rowStart; r0 < rowEnd; r0 += step) {
    const rows = Math.min(step, rowEnd - r0);
    if (!(await work(await reader.read(loc, r0, rows, timings), r0, rows))) return;
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
  /** format v2 (double_quant): the integer params and super-group factors (scales / zeroPoints unused), or null */
  v2: { groupParams: Uint8Array; superScales: Uint16Array; superOffsets: Uint16Array } | null;
}

/** Quantize rows [rowStart, rowEnd) into the layer's buffers; −1, or the layer-level index of the first non-finite value. */
export async function quantizePiece(kernel: QuantKernel, reader: RowReader, a: QuantizePieceArgs, timings: Timings): Promise<number> {
  const gpr = groupsPerRow(a.cols, a.groupSize);
  const v2 = a.v2;
  const groupSize = a.groupSize as V2GroupSize;
  // Synchronous on purpose: this is a dedicated quantization thread, and the async entry point
  // would queue the work on libuv's small pool behind the file reads and writes.
  const chunk = (src: Uint8Array, r0: number, rows: number): number => {
    const byte0 = (r0 * a.cols * a.bits) / 8;
    const packed = a.packed.subarray(byte0, byte0 + Math.ceil((rows * a.cols * a.bits) / 8));
    const rowStats = a.rowStats.subarray(r0 * STATS_PER_ROW, (r0 + rows) * STATS_PER_ROW);
    if (!v2) {
      return kernel.quantizeSync(
        { src, dtype: a.dtype, rows, cols: a.cols, bits: a.bits, groupSize: a.groupSize, refine: a.refine, colScale: a.colScale },
        { packed, scales: a.scales.subarray(r0 * gpr, (r0 + rows) * gpr), zeroPoints: a.zeroPoints.subarray(r0 * gpr, (r0 + rows) * gpr), rowStats },
      );
    }
    const from = v2Offsets(r0, a.cols, a.bits, groupSize);
    const to = v2Offsets(r0 + rows, a.cols, a.bits, groupSize);
    return kernel.quantizeV2Sync(
      { src, dtype: a.dtype, rows, cols: a.cols, bits: a.bits, groupSize, colScale: a.colScale },
      {
        packed, rowStats,
        // the end of the layer may hold a partial super-group and a partial param byte
        groupParams: v2.groupParams.subarray(from.paramByte, Math.ceil(to.paramByte)),
        superScales: v2.superScales.subarray(from.superGroup, Math.ceil(to.superGroup)),
        superOffsets: v2.superOffsets.subarray(from.superGroup, Math.ceil(to.superGroup)),
      },
    );
  };
  let bad = -1;
  await forEachChunk(reader, a, a.rowStart, a.rowEnd, timings, async (src, r0, rows) => {
    const t0 = performance.now();
    const idx = chunk(src, r0, rows);
    timings.kernelMs += performance.now() - t0;
    if (idx >= 0) {
      bad = r0 * a.cols + idx;
      return false;
    }
    return true;
  }, v2 ? v2RowAlign(a.cols, a.bits, groupSize) : 8);
  return bad;
}

export interface PassthroughResult {
  data: Uint8Array;
  quantType: QuantType;
  sqnrDb: number;
  cosine: number;
}

/** True when some F16/BF16 value is NaN or ±Inf (its exponent bits all set). */
function hasNonFinite16(bytes: Uint8Array, dtype: 'F16' | 'BF16'): boolean {
  const u16 = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
  const exp = dtype === 'F16' ? 0x7c00 : 0x7f80;
  for (let i = 0; i < u16.length; i++) if ((u16[i]! & exp) === exp) return true;
  return false;
}

/**
 * A layer kept as a float (format.md): F16/BF16 bytes unchanged (exact: SQNR +Inf, cosine 1, or
 * NaN when the source holds NaN/Inf); F32 stored as f16 when every value is finite and fits,
 * else as bf16, with SQNR and cosine of that rounding. Read in chunks: memory holds the output.
 */
export async function passthroughLayer(reader: RowReader, loc: TensorLocation, rows: number, timings: Timings): Promise<PassthroughResult> {
  const n = rows * loc.cols;
  if (loc.dtype !== 'F32') {
    const data = new Uint8Array(n * 2);
    let finite = true;
    await forEachChunk(reader, loc, 0, rows, timings, async (bytes, r0) => {
      data.set(bytes, r0 * loc.cols * 2);
      if (finite && hasNonFinite16(bytes, loc.dtype as 'F16' | 'BF16')) finite = false;
      return true;
    });
    return { data, quantType: loc.dtype === 'F16' ? 'f16' : 'bf16', sqnrDb: finite ? Infinity : NaN, cosine: finite ? 1 : NaN };
  }
  let asF16 = true;
  await forEachChunk(reader, loc, 0, rows, timings, async (bytes) => {
    asF16 = fitsF16(decodeToF32(bytes, 'F32'));
    return asF16;
  });
  const out = new Uint16Array(n);
  const stats = { w2: 0, e2: 0, wq: 0, q2: 0 };
  await forEachChunk(reader, loc, 0, rows, timings, async (bytes, r0) => {
    const values = decodeToF32(bytes, 'F32');
    const back = new Float32Array(values.length);
    const base = r0 * loc.cols;
    for (let i = 0; i < values.length; i++) {
      const h = asF16 ? f32ToF16Bits(values[i]!) : f32ToBf16Bits(values[i]!);
      out[base + i] = h;
      back[i] = asF16 ? F16_TABLE[h]! : bf16BitsToF32(h);
    }
    accumulateStats(stats, values, back);
    return true;
  });
  const q = statsToQuality(stats);
  return { data: new Uint8Array(out.buffer), quantType: asF16 ? 'f16' : 'bf16', sqnrDb: q.sqnrDb, cosine: q.cosine };
}

/** SHA-256 (hex) of a layer's data, timed as hashing. */
export function hashData(data: Uint8Array, timings: Timings): string {
  const t0 = performance.now();
  const sha = createHash('sha256').update(data).digest('hex');
  timings.hashMs += performance.now() - t0;
  return sha;
}
