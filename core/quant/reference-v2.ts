// The reference of format v2 (double-quantized group parameters): the specification every native
// v2 kernel must match bit for bit. Same conventions as reference.ts: every float32 step one
// Math.fround, rounding half to even (rne), 16-lane group sums, float64 per row.
//
// Groups of G ∈ {16, 32} consecutive elements per row (the last of a row shorter) each keep an
// integer scale qs ∈ [0, QS] and an integer offset qm ∈ [0, QM]. Super-group k is the run of
// groups [k·S, (k+1)·S) in row-major (row, group) order of the call's groups — it may span rows;
// the last super-group holds what is left (1..S groups). It stores two float16 factors d, m ≥ 0:
//   scale = fround(d · μ(qs))   offset = fround(m · qm)   inv = scale > 0 ? fround(1 / scale) : 0
// with μ(qs) = qs (linear layouts) or μ(qs) = 2^((qs − QS)/4) (logarithmic layouts, LOG_STEPS).
//   q     = rne(clamp(fround(fround(x + offset) · inv), 0, L))
//   ŵ     = fround(fround(q · scale) − offset)
// The codes are always computed from these stored values.
//
// Search, per super-group: (A) each group's float (scale, offset): the least-squares fit (as
// k-quants' make_qkx2_quants) to the codes of its min/max range (that range when no positive
// scale fits); (B) the two
// factors d = f16(max scale / μ(QS)), m = f16(max offset / QM); (C) per group the best of the
// 2 × 2 integer pairs below/above its (scale, offset) by the error of their codes (rounding either
// down clips an end of the group); then while the error falls (at most REFIT_ROUNDS): a
// least-squares fit of (scale, offset) to the current codes, rounded to the nearest stored
// levels, kept if the error of its codes is lower.

import { f32ToF16Bits, F16_TABLE } from './float16.js';
import { LANES, STATS_PER_ROW, firstNonFinite, groupsPerRow, packedBytes, rne, type QuantBits } from './reference.js';

const fr = Math.fround;

export const V2_GROUP_SIZES = [16, 32] as const;
export type V2GroupSize = (typeof V2_GROUP_SIZES)[number];

/** The fixed layout of a (bits, group size): widths of the integer params and groups per super-group. */
export interface V2Layout {
  scaleBits: number;
  offsetBits: number;
  /** groups per super-group */
  superGroups: number;
  /** μ(qs) = 2^((qs − QS)/4) instead of qs */
  logScale: boolean;
}

/**
 * format.md "Version 2": the layouts (tuned on stories260K: INT4 g16 is the 4.5-bit encoding).
 * S·(scaleBits + offsetBits) is a multiple of 8, so every super-group's params start on a byte.
 */
export function v2Layout(bits: QuantBits, groupSize: V2GroupSize): V2Layout {
  if (bits === 4 && groupSize === 16) return { scaleBits: 3, offsetBits: 4, superGroups: 64, logScale: true };
  if (bits === 2) return { scaleBits: 4, offsetBits: 4, superGroups: 512 / groupSize, logScale: false };
  return { scaleBits: 6, offsetBits: 6, superGroups: 512 / groupSize, logScale: false };
}

/** fround(2^(−j/4)) for j = 0..3, exactly (bit patterns 3f800000, 3f5744fd, 3f3504f3, 3f1837f0). */
export const LOG_STEPS: readonly number[] = [1, 0.8408964276313782, 0.7071067690849304, 0.5946035385131836];

/** μ(qs) of a layout, exact: a power of two times LOG_STEPS[(QS − qs) mod 4] for log layouts. */
export function scaleMultiplier(qs: number, layout: V2Layout): number {
  if (!layout.logScale) return qs;
  const QS = (1 << layout.scaleBits) - 1;
  const j = QS - qs;
  return fr(LOG_STEPS[j & 3]! * 2 ** -(j >> 2));
}

/**
 * Refit rounds of step C at most. More (and more candidate code assignments in step A, δ = ±½,
 * ±1 as make_qkx2_quants tries) moved stories260K by < 0.12 dB at twice the cost: the integer
 * search of step C is what matters.
 */
export const REFIT_ROUNDS = 1;

export interface QuantizeRowsV2Args {
  values: Float32Array;
  rows: number;
  cols: number;
  bits: QuantBits;
  groupSize: V2GroupSize;
  colScale?: Float32Array | null;
}

export interface QuantizeRowsV2Output {
  /** ceil(rows·cols·bits / 8) bytes, as v1 */
  packed: Uint8Array;
  /** the integer params, qs then qm of each group, LSB first, continuous: v2ParamBytes(groups) */
  groupParams: Uint8Array;
  /** float16 bits of d and m per super-group */
  superScales: Uint16Array;
  superOffsets: Uint16Array;
  rowStats: Float64Array;
}

export function v2ParamBytes(groups: number, layout: V2Layout): number {
  return Math.ceil((groups * (layout.scaleBits + layout.offsetBits)) / 8);
}

export function v2SuperGroups(groups: number, layout: V2Layout): number {
  return Math.ceil(groups / layout.superGroups);
}

/** Stored bytes of a v2 layer: codes + integer params + 2 float16 per super-group. */
export function v2LayerBytes(rows: number, cols: number, bits: QuantBits, groupSize: V2GroupSize): number {
  const layout = v2Layout(bits, groupSize);
  const groups = rows * groupsPerRow(cols, groupSize);
  return packedBytes(rows * cols, bits) + v2ParamBytes(groups, layout) + 4 * v2SuperGroups(groups, layout);
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/**
 * Rows a piece or chunk of a v2 layer must start at a multiple of: its first group must start a
 * super-group (and its codes a byte, as v1's multiple of 8 rows gives).
 */
export function v2RowAlign(cols: number, bits: QuantBits, groupSize: V2GroupSize): number {
  const S = v2Layout(bits, groupSize).superGroups;
  const superRows = S / gcd(S, groupsPerRow(cols, groupSize));
  return (superRows * 8) / gcd(superRows, 8);
}

/** Where the v2 outputs of rows starting at `row` begin: flat group, param byte, super-group. */
export function v2Offsets(row: number, cols: number, bits: QuantBits, groupSize: V2GroupSize): { group: number; paramByte: number; superGroup: number } {
  const layout = v2Layout(bits, groupSize);
  const group = row * groupsPerRow(cols, groupSize);
  return { group, paramByte: (group * (layout.scaleBits + layout.offsetBits)) / 8, superGroup: group / layout.superGroups };
}

function laneReduce(acc: Float32Array): number {
  for (let w = LANES / 2; w >= 1; w >>= 1) {
    for (let j = 0; j < w; j++) acc[j] = fr(acc[j]! + acc[j + w]!);
  }
  return acc[0]!;
}

/** Reconstructed (scale, offset, inv) of integer params under factors (d, m). */
export function v2Params(d: number, m: number, qs: number, qm: number, layout: V2Layout): { scale: number; offset: number; inv: number } {
  const scale = fr(d * scaleMultiplier(qs, layout));
  const offset = fr(m * qm);
  return { scale, offset, inv: scale > 0 ? fr(1 / scale) : 0 };
}

export function v2Code(x: number, offset: number, inv: number, levels: number): number {
  let t = fr(fr(x + offset) * inv);
  if (t < 0) t = 0;
  else if (t > levels) t = levels;
  return rne(t);
}

export function v2Value(q: number, scale: number, offset: number): number {
  return fr(fr(q * scale) - offset);
}

const acc = new Float32Array(LANES);
const accB = new Float32Array(LANES);
const accC = new Float32Array(LANES);
const accD = new Float32Array(LANES);

/** Σ (x − ŵ)² of a group with codes from (scale, offset, inv), lane order; codes written to `codes`. */
function invOf(scale: number): number {
  return scale > 0 ? fr(1 / scale) : 0;
}

function codesAndError(x: Float32Array, n: number, scale: number, offset: number, inv: number, levels: number, codes: Uint8Array): number {
  acc.fill(0);
  for (let i = 0; i < n; i++) {
    const q = v2Code(x[i]!, offset, inv, levels);
    codes[i] = q;
    const e = fr(x[i]! - v2Value(q, scale, offset));
    acc[i % LANES] = fr(acc[i % LANES]! + fr(e * e));
  }
  return laneReduce(acc);
}

/**
 * Least-squares (scale, offset ≥ 0) of ŵ = scale·q − offset for given codes; null when the codes
 * do not determine a positive scale. sx = Σx (lane order) is passed in.
 */
function fitToCodes(x: Float32Array, n: number, codes: Uint8Array, sx: number): { scale: number; offset: number } | null {
  acc.fill(0);
  accB.fill(0);
  accC.fill(0);
  for (let i = 0; i < n; i++) {
    const q = codes[i]!;
    const l = i % LANES;
    acc[l] = fr(acc[l]! + q);
    accB[l] = fr(accB[l]! + fr(q * q));
    accC[l] = fr(accC[l]! + fr(x[i]! * q));
  }
  const sl = laneReduce(acc);
  const sll = laneReduce(accB);
  const sxl = laneReduce(accC);
  const nf = n;
  const det = fr(fr(sll * nf) - fr(sl * sl));
  if (det > 0) {
    const scale = fr(fr(fr(sxl * nf) - fr(sl * sx)) / det);
    const offset = fr(fr(fr(sxl * sl) - fr(sll * sx)) / det);
    if (scale > 0 && offset >= 0) return { scale, offset };
  }
  // Offset clamped at 0 (or all codes equal): the best scale through the origin.
  if (sll > 0) {
    const scale = fr(sxl / sll);
    if (scale > 0) return { scale, offset: 0 };
  }
  return null;
}

function sumLanes(x: Float32Array, n: number): number {
  accD.fill(0);
  for (let i = 0; i < n; i++) accD[i % LANES] = fr(accD[i % LANES]! + x[i]!);
  return laneReduce(accD);
}

/** Step A: a group's float (scale, offset); scale 0 when the range is empty (a constant ≤ 0 group: offset = −value). */
function fitGroup(x: Float32Array, n: number, levels: number, codes: Uint8Array): { scale: number; offset: number } {
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < n; i++) {
    const v = x[i]!;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (lo > 0) lo = 0; // the offset is ≥ 0: the range always reaches down to 0 or below
  const range = fr(hi - lo);
  const offset0 = fr(-lo);
  if (!(range > 0)) return { scale: 0, offset: offset0 };
  const sx = sumLanes(x, n);
  const iscale = fr(levels / range);
  for (let i = 0; i < n; i++) {
    let t = fr(fr(x[i]! - lo) * iscale);
    if (t < 0) t = 0;
    else if (t > levels) t = levels;
    codes[i] = rne(t);
  }
  return fitToCodes(x, n, codes, sx) ?? { scale: fr(range / levels), offset: offset0 };
}

/** The largest index whose level is ≤ v (0 when none is); levels ascend. */
function floorLevel(levels: Float32Array, count: number, v: number): number {
  let q = 0;
  for (let i = 1; i < count; i++) if (levels[i]! <= v) q = i;
  return q;
}

/** The index of the level nearest v (the lower one on a tie). */
function nearestLevel(levels: Float32Array, count: number, v: number): number {
  const q = floorLevel(levels, count, v);
  if (q + 1 < count && fr(levels[q + 1]! - v) < fr(v - levels[q]!)) return q + 1;
  return q;
}

/** f16 bits of max / imax, never negative, never infinite (v ≤ 65504 after clamping). */
function factorBits(max: number, imax: number): number {
  let f = fr(max / imax);
  if (f > 65504) f = 65504;
  return f32ToF16Bits(f);
}

/** Writes `width`-bit fields LSB first, continuously. */
class FieldWriter {
  pos = 0;
  cur = 0;
  nbits = 0;
  constructor(private readonly out: Uint8Array) {}
  put(v: number, width: number): void {
    this.cur |= v << this.nbits;
    this.nbits += width;
    while (this.nbits >= 8) {
      this.out[this.pos++] = this.cur & 0xff;
      this.cur >>>= 8;
      this.nbits -= 8;
    }
  }
  finish(): void {
    if (this.nbits > 0) this.out[this.pos++] = this.cur & 0xff;
    this.cur = 0;
    this.nbits = 0;
  }
}

/** Reads the field at bit position `bit` (LSB first). */
export function readField(bytes: Uint8Array, bit: number, width: number): number {
  let v = 0;
  for (let k = 0; k < width; k++) {
    const b = bit + k;
    v |= ((bytes[b >>> 3]! >>> (b & 7)) & 1) << k;
  }
  return v;
}

/**
 * Quantize a row range whose first group starts a super-group. −1, or the index of the first
 * non-finite value (then nothing is written).
 */
export function quantizeRowsV2Ref(a: QuantizeRowsV2Args, out: QuantizeRowsV2Output): number {
  const bad = firstNonFinite(a.values.subarray(0, a.rows * a.cols));
  if (bad >= 0) return bad;
  const levels = (1 << a.bits) - 1;
  const layout = v2Layout(a.bits, a.groupSize);
  const QS = (1 << layout.scaleBits) - 1;
  const QM = (1 << layout.offsetBits) - 1;
  const G = a.groupSize;
  const S = layout.superGroups;
  const gpr = groupsPerRow(a.cols, G);
  const total = a.rows * gpr;
  const xs = Array.from({ length: S }, () => new Float32Array(G));
  const codes = Array.from({ length: S }, () => new Uint8Array(G));
  const trial = new Uint8Array(G);
  const fs = new Float32Array(S);
  const fo = new Float32Array(S);
  const iqs = new Int32Array(S);
  const iqm = new Int32Array(S);
  const sLevels = new Float32Array(QS + 1);
  const oLevels = new Float32Array(QM + 1);
  const params = new FieldWriter(out.groupParams);
  const lanes = [0, 1, 2, 3].map(() => new Float32Array(LANES));
  let cur = 0;
  let nbits = 0;
  let pos = 0;
  let rowSums = [0, 0, 0, 0];
  for (let g0 = 0, k = 0; g0 < total; g0 += S, k++) {
    const ng = Math.min(S, total - g0);
    // Step A.
    let maxS = 0;
    let maxO = 0;
    for (let j = 0; j < ng; j++) {
      const r = Math.floor((g0 + j) / gpr);
      const c0 = ((g0 + j) % gpr) * G;
      const n = Math.min(G, a.cols - c0);
      const x = xs[j]!;
      for (let i = 0; i < n; i++) {
        const w = a.values[r * a.cols + c0 + i]!;
        x[i] = a.colScale ? fr(w * a.colScale[c0 + i]!) : w;
      }
      const f = fitGroup(x, n, levels, codes[j]!);
      fs[j] = f.scale;
      fo[j] = f.offset;
      if (f.scale > maxS) maxS = f.scale;
      if (f.offset > maxO) maxO = f.offset;
    }
    // Step B.
    const dBits = factorBits(maxS, scaleMultiplier(QS, layout));
    const mBits = factorBits(maxO, QM);
    const d = F16_TABLE[dBits]!;
    const m = F16_TABLE[mBits]!;
    out.superScales[k] = dBits;
    out.superOffsets[k] = mBits;
    // Step C. The stored levels of this super-group, ascending.
    for (let q = 0; q <= QS; q++) sLevels[q] = fr(d * scaleMultiplier(q, layout));
    for (let q = 0; q <= QM; q++) oLevels[q] = fr(m * q);
    for (let j = 0; j < ng; j++) {
      const c0 = ((g0 + j) % gpr) * G;
      const n = Math.min(G, a.cols - c0);
      const x = xs[j]!;
      const qs0 = floorLevel(sLevels, QS + 1, fs[j]!);
      const qm0 = floorLevel(oLevels, QM + 1, fo[j]!);
      let qs = qs0;
      let qm = qm0;
      let err = codesAndError(x, n, sLevels[qs]!, oLevels[qm]!, invOf(sLevels[qs]!), levels, codes[j]!);
      for (let c = 1; c < 4; c++) {
        const qs2 = Math.min(QS, qs0 + (c & 1));
        const qm2 = Math.min(QM, qm0 + (c >> 1));
        const err2 = codesAndError(x, n, sLevels[qs2]!, oLevels[qm2]!, invOf(sLevels[qs2]!), levels, trial);
        if (err2 < err) {
          qs = qs2;
          qm = qm2;
          err = err2;
          codes[j]!.set(trial.subarray(0, n));
        }
      }
      const sx = sumLanes(x, n);
      for (let round = 0; round < REFIT_ROUNDS; round++) {
        const fit = fitToCodes(x, n, codes[j]!, sx);
        if (!fit) break;
        const qs2 = nearestLevel(sLevels, QS + 1, fit.scale);
        const qm2 = nearestLevel(oLevels, QM + 1, fit.offset);
        if (qs2 === qs && qm2 === qm) break;
        const err2 = codesAndError(x, n, sLevels[qs2]!, oLevels[qm2]!, invOf(sLevels[qs2]!), levels, trial);
        if (!(err2 < err)) break;
        qs = qs2;
        qm = qm2;
        err = err2;
        codes[j]!.set(trial.subarray(0, n));
      }
      iqs[j] = qs;
      iqm[j] = qm;
      params.put(qs, layout.scaleBits);
      params.put(qm, layout.offsetBits);
    }
    // Codes and statistics, in group order.
    for (let j = 0; j < ng; j++) {
      const gi = g0 + j;
      const r = Math.floor(gi / gpr);
      const c0 = (gi % gpr) * G;
      const n = Math.min(G, a.cols - c0);
      const p = v2Params(d, m, iqs[j]!, iqm[j]!, layout);
      for (const l of lanes) l.fill(0);
      const [w2, e2, wq, q2] = lanes as [Float32Array, Float32Array, Float32Array, Float32Array];
      for (let i = 0; i < n; i++) {
        const q = codes[j]![i]!;
        cur |= q << nbits;
        nbits += a.bits;
        if (nbits === 8) {
          out.packed[pos++] = cur;
          cur = 0;
          nbits = 0;
        }
        const w = a.values[r * a.cols + c0 + i]!;
        let wh = v2Value(q, p.scale, p.offset);
        if (a.colScale) wh = fr(wh / a.colScale[c0 + i]!);
        const e = fr(w - wh);
        const l = i % LANES;
        w2[l] = fr(w2[l]! + fr(w * w));
        e2[l] = fr(e2[l]! + fr(e * e));
        wq[l] = fr(wq[l]! + fr(w * wh));
        q2[l] = fr(q2[l]! + fr(wh * wh));
      }
      for (let s = 0; s < STATS_PER_ROW; s++) rowSums[s] += laneReduce(lanes[s]!);
      if ((gi + 1) % gpr === 0) {
        for (let s = 0; s < STATS_PER_ROW; s++) out.rowStats[r * STATS_PER_ROW + s] = rowSums[s]!;
        rowSums = [0, 0, 0, 0];
      }
    }
  }
  params.finish();
  if (nbits > 0) out.packed[pos++] = cur;
  return -1;
}

export interface DequantizeRowsV2Args {
  /** codes of the row range, starting at a byte boundary */
  packed: Uint8Array;
  /** the layer's (or call's) whole integer params and factors */
  groupParams: Uint8Array;
  superScales: Uint16Array;
  superOffsets: Uint16Array;
  /** flat index (in groupParams) of the range's first group */
  firstGroup: number;
  rows: number;
  cols: number;
  bits: QuantBits;
  groupSize: V2GroupSize;
  colScale?: Float32Array | null;
}

/** ŵ of a row range (format.md "Version 2"). */
export function dequantizeRowsV2Ref(a: DequantizeRowsV2Args, out: Float32Array): void {
  const layout = v2Layout(a.bits, a.groupSize);
  const pw = layout.scaleBits + layout.offsetBits;
  const gpr = groupsPerRow(a.cols, a.groupSize);
  const mask = (1 << a.bits) - 1;
  let bitPos = 0;
  for (let r = 0; r < a.rows; r++) {
    for (let g = 0; g < gpr; g++) {
      const gi = a.firstGroup + r * gpr + g;
      const k = Math.floor(gi / layout.superGroups);
      const qs = readField(a.groupParams, gi * pw, layout.scaleBits);
      const qm = readField(a.groupParams, gi * pw + layout.scaleBits, layout.offsetBits);
      const p = v2Params(F16_TABLE[a.superScales[k]!]!, F16_TABLE[a.superOffsets[k]!]!, qs, qm, layout);
      const c0 = g * a.groupSize;
      const n = Math.min(a.groupSize, a.cols - c0);
      for (let i = 0; i < n; i++) {
        const q = (a.packed[bitPos >>> 3]! >>> (bitPos & 7)) & mask;
        bitPos += a.bits;
        let wh = v2Value(q, p.scale, p.offset);
        if (a.colScale) wh = fr(wh / a.colScale[c0 + i]!);
        out[r * a.cols + c0 + i] = wh;
      }
    }
  }
}
