// A layer's quality from the four sums Σw², Σ(w−ŵ)², Σw·ŵ, Σŵ² (in the original space):
// sqnr_db = 10·log10(Σw² / Σ(w−ŵ)²) (+Inf when exact), cosine = Σw·ŵ / √(Σw²·Σŵ²).

import { STATS_PER_ROW } from './reference.js';

export interface LayerStats {
  w2: number;
  e2: number;
  wq: number;
  q2: number;
}

/** Add the first w.length elements' sums to `s` (in index order); returns `s`. */
export function accumulateStats(s: LayerStats, w: Float32Array, wh: Float32Array): LayerStats {
  let { w2, e2, wq, q2 } = s;
  for (let i = 0; i < w.length; i++) {
    const a = w[i]!;
    const b = wh[i]!;
    const e = a - b;
    w2 += a * a;
    e2 += e * e;
    wq += a * b;
    q2 += b * b;
  }
  Object.assign(s, { w2, e2, wq, q2 });
  return s;
}

/** Total of per-row sums, in row order (the kernels' row statistics), so that the result never depends on how rows were split between threads. */
export function sumRowStats(rowStats: Float64Array, rows: number): LayerStats {
  const s = { w2: 0, e2: 0, wq: 0, q2: 0 };
  for (let r = 0; r < rows; r++) {
    const o = r * STATS_PER_ROW;
    s.w2 += rowStats[o]!;
    s.e2 += rowStats[o + 1]!;
    s.wq += rowStats[o + 2]!;
    s.q2 += rowStats[o + 3]!;
  }
  return s;
}

export function statsToQuality(s: LayerStats): { sqnrDb: number; cosine: number } {
  const sqnr = s.e2 === 0 ? Infinity : 10 * Math.log10(s.w2 / s.e2);
  const denom = Math.sqrt(s.w2 * s.q2);
  const cos = denom === 0 ? (s.w2 === 0 && s.q2 === 0 ? 1 : 0) : Math.max(-1, Math.min(1, s.wq / denom));
  return { sqnrDb: Math.fround(sqnr), cosine: Math.fround(cos) };
}
