// The reference quantizer: the specification every native kernel must match bit for bit.
//
// Every arithmetic step is one IEEE float32 operation (Math.fround after each), never fused.
// The native kernels do the same operations in the same order, so codes, scales, zero points
// and the per-row statistics are identical. Written for clarity, not speed.
//
// A row range of a tensor viewed as [R, C] (format.md) is cut into groups of `groupSize`
// consecutive elements per row (the last one shorter). Per group:
//   params = chooseParams(min, max)             (or the best clipped range with refine)
//   q      = rne(clamp(fround(fround(x · inv) + zero), 0, L))     inv = fround(1 / scale)
//   ŵ      = fround(fround(q − zero) · scale)
// Codes are packed least-significant bits first, continuously over rows.
// Sums over a group are kept in 16 float32 lanes (element i of the group goes to lane i mod 16,
// in order), reduced pairwise (lane j += lane j+8, then +4, +2, +1), then added in float64 per
// row in group order. That fixed order is what lets SIMD code and this loop agree exactly.

import { F16_MAX, F16_TABLE, f32ToF16Bits } from './float16.js';

const fr = Math.fround;

export type QuantBits = 2 | 4 | 8;
export const QUANT_BITS: readonly QuantBits[] = [2, 4, 8];
export const GROUP_SIZES = [32, 64, 128, 256] as const;

/** Number of float32 accumulation lanes in every group reduction. */
export const LANES = 16;

/** A zero point is kept within ±Z_LIMIT so that it always fits float16 after rounding. */
export const Z_LIMIT = 65000;

/** Fractions of a group's range clipped from each end by `refine: search` (6 × 6 candidates). */
export const CLIP_FRACTIONS: readonly number[] = [0, 0.05, 0.1, 0.15, 0.2, 0.3].map(fr);

/** Round half to even, the rule used everywhere (SIMD `round` with nearest-int mode). */
export function rne(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && (r & 1) !== 0 ? r - 1 : r;
}

export interface GroupParams {
  scaleBits: number;
  zeroBits: number;
  /** float16 values as numbers */
  scale: number;
  zero: number;
  /** fround(1 / scale) */
  inv: number;
}

function clampF16(v: number): number {
  return v > F16_MAX ? F16_MAX : v < -F16_MAX ? -F16_MAX : v;
}

/**
 * Scale and zero point for a group whose values lie in [lo, hi] (float32), both rounded to float16
 * before any code is computed. A constant group gets scale 1 and the zero point that reproduces
 * it; the scale is raised when needed so that |zero| ≤ Z_LIMIT and capped at float16's maximum.
 */
export function chooseParams(lo: number, hi: number, levels: number): GroupParams {
  let scaleBits = 0x3c00; // 1.0
  let zeroBits: number;
  if (lo === hi) {
    zeroBits = f32ToF16Bits(clampF16(-lo));
  } else {
    let s = fr(fr(hi - lo) / levels);
    const sz = fr(Math.abs(lo) / Z_LIMIT);
    if (sz > s) s = sz;
    if (s > F16_MAX) s = F16_MAX;
    const sb = f32ToF16Bits(s);
    if ((sb & 0x7fff) === 0) {
      zeroBits = f32ToF16Bits(clampF16(-lo));
    } else {
      scaleBits = sb;
      zeroBits = f32ToF16Bits(clampF16(fr(-lo / F16_TABLE[sb]!)));
    }
  }
  const scale = F16_TABLE[scaleBits]!;
  return { scaleBits, zeroBits, scale, zero: F16_TABLE[zeroBits]!, inv: fr(1 / scale) };
}

export function quantizeValue(x: number, p: GroupParams, levels: number): number {
  let t = fr(fr(x * p.inv) + p.zero);
  if (t < 0) t = 0;
  else if (t > levels) t = levels;
  return rne(t);
}

export function dequantizeValue(q: number, p: { scale: number; zero: number }): number {
  return fr(fr(q - p.zero) * p.scale);
}

function laneReduce(acc: Float32Array): number {
  for (let w = LANES / 2; w >= 1; w >>= 1) {
    for (let j = 0; j < w; j++) acc[j] = fr(acc[j]! + acc[j + w]!);
  }
  return acc[0]!;
}

/** Σ (x − ŵ)² of a group under `p`, in lane order. */
export function groupSquaredError(x: Float32Array, n: number, p: GroupParams, levels: number): number {
  const acc = new Float32Array(LANES);
  for (let i = 0; i < n; i++) {
    const e = fr(x[i]! - dequantizeValue(quantizeValue(x[i]!, p, levels), p));
    acc[i % LANES] = fr(acc[i % LANES]! + fr(e * e));
  }
  return laneReduce(acc);
}

/**
 * `refine: search`: try every clipped range (lo + f_i·range, hi − f_j·range) for f in
 * CLIP_FRACTIONS, i outer, j inner, and keep the first with the least squared error. The
 * unclipped candidate comes first, so the result is never worse than plain rounding.
 */
export function searchParams(x: Float32Array, n: number, lo: number, hi: number, levels: number): GroupParams {
  const range = fr(hi - lo);
  let best = chooseParams(lo, hi, levels);
  if (lo === hi || !Number.isFinite(range)) return best;
  let bestErr = groupSquaredError(x, n, best, levels);
  for (let i = 0; i < CLIP_FRACTIONS.length; i++) {
    const clo = fr(lo + fr(range * CLIP_FRACTIONS[i]!));
    for (let j = 0; j < CLIP_FRACTIONS.length; j++) {
      if (i === 0 && j === 0) continue;
      const chi = fr(hi - fr(range * CLIP_FRACTIONS[j]!));
      const p = chooseParams(clo, chi, levels);
      const err = groupSquaredError(x, n, p, levels);
      if (err < bestErr) {
        bestErr = err;
        best = p;
      }
    }
  }
  return best;
}

export interface QuantizeRowsArgs {
  /** rows × cols float32 values, row-major */
  values: Float32Array;
  rows: number;
  cols: number;
  bits: QuantBits;
  groupSize: number;
  refine: boolean;
  /** spatial: column j is multiplied by colScale[j] before quantizing, ŵ divided by it after */
  colScale?: Float32Array | null;
}

export interface QuantizeRowsOutput {
  /** ceil(rows·cols·bits / 8) bytes */
  packed: Uint8Array;
  /** float16 bits, rows · ceil(cols / groupSize) */
  scales: Uint16Array;
  zeroPoints: Uint16Array;
  /** per row: Σw², Σ(w−ŵ)², Σw·ŵ, Σŵ² in the original space */
  rowStats: Float64Array;
}

export const STATS_PER_ROW = 4;

export function groupsPerRow(cols: number, groupSize: number): number {
  return Math.ceil(cols / groupSize);
}

export function packedBytes(elements: number, bits: number): number {
  return Math.ceil((elements * bits) / 8);
}

/** Index of the first NaN or ±Inf, or −1. */
export function firstNonFinite(values: Float32Array): number {
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i]!)) return i;
  return -1;
}

/**
 * Quantize a row range. Returns −1, or the index of the first non-finite value (then nothing
 * is written). `out` buffers must have at least the sizes documented on QuantizeRowsOutput.
 */
export function quantizeRowsRef(a: QuantizeRowsArgs, out: QuantizeRowsOutput): number {
  const bad = firstNonFinite(a.values.subarray(0, a.rows * a.cols));
  if (bad >= 0) return bad;
  const levels = (1 << a.bits) - 1;
  const gpr = groupsPerRow(a.cols, a.groupSize);
  const x = new Float32Array(a.groupSize);
  const lanes = [0, 1, 2, 3].map(() => new Float32Array(LANES));
  let cur = 0;
  let nbits = 0;
  let pos = 0;
  for (let r = 0; r < a.rows; r++) {
    const rowSums = [0, 0, 0, 0];
    for (let g = 0; g < gpr; g++) {
      const c0 = g * a.groupSize;
      const n = Math.min(a.groupSize, a.cols - c0);
      const base = r * a.cols + c0;
      let lo = Infinity;
      let hi = -Infinity;
      for (let i = 0; i < n; i++) {
        const v = a.colScale ? fr(a.values[base + i]! * a.colScale[c0 + i]!) : a.values[base + i]!;
        x[i] = v;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      const p = a.refine ? searchParams(x, n, lo, hi, levels) : chooseParams(lo, hi, levels);
      out.scales[r * gpr + g] = p.scaleBits;
      out.zeroPoints[r * gpr + g] = p.zeroBits;
      for (const l of lanes) l.fill(0);
      const [w2, e2, wq, q2] = lanes as [Float32Array, Float32Array, Float32Array, Float32Array];
      for (let i = 0; i < n; i++) {
        const q = quantizeValue(x[i]!, p, levels);
        cur |= q << nbits;
        nbits += a.bits;
        if (nbits === 8) {
          out.packed[pos++] = cur;
          cur = 0;
          nbits = 0;
        }
        const w = a.values[base + i]!;
        let wh = dequantizeValue(q, p);
        if (a.colScale) wh = fr(wh / a.colScale[c0 + i]!);
        const e = fr(w - wh);
        const l = i % LANES;
        w2[l] = fr(w2[l]! + fr(w * w));
        e2[l] = fr(e2[l]! + fr(e * e));
        wq[l] = fr(wq[l]! + fr(w * wh));
        q2[l] = fr(q2[l]! + fr(wh * wh));
      }
      for (let k = 0; k < STATS_PER_ROW; k++) rowSums[k] += laneReduce(lanes[k]!);
    }
    for (let k = 0; k < STATS_PER_ROW; k++) out.rowStats[r * STATS_PER_ROW + k] = rowSums[k]!;
  }
  if (nbits > 0) out.packed[pos++] = cur;
  return -1;
}

export interface DequantizeRowsArgs {
  packed: Uint8Array;
  scales: Uint16Array;
  zeroPoints: Uint16Array;
  rows: number;
  cols: number;
  bits: QuantBits;
  groupSize: number;
  colScale?: Float32Array | null;
}

/** ŵ for a row range whose packed codes start at a byte boundary (format.md's dequantization). */
export function dequantizeRowsRef(a: DequantizeRowsArgs, out: Float32Array): void {
  const gpr = groupsPerRow(a.cols, a.groupSize);
  const mask = (1 << a.bits) - 1;
  let bitPos = 0;
  for (let r = 0; r < a.rows; r++) {
    for (let g = 0; g < gpr; g++) {
      const c0 = g * a.groupSize;
      const n = Math.min(a.groupSize, a.cols - c0);
      const p = { scale: F16_TABLE[a.scales[r * gpr + g]!]!, zero: F16_TABLE[a.zeroPoints[r * gpr + g]!]! };
      for (let i = 0; i < n; i++) {
        const q = (a.packed[bitPos >>> 3]! >>> (bitPos & 7)) & mask;
        bitPos += a.bits;
        let wh = dequantizeValue(q, p);
        if (a.colScale) wh = fr(wh / a.colScale[c0 + i]!);
        out[r * a.cols + c0 + i] = wh;
      }
    }
  }
}

/** Spatial equalization input: out[j] = max(out[j], |w_ij|) over the given rows. */
export function columnAbsMaxRef(values: Float32Array, rows: number, cols: number, out: Float32Array): void {
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const a = Math.abs(values[r * cols + c]!);
      if (a > out[c]!) out[c] = a;
    }
  }
}
