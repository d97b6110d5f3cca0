// Seeded random numbers for synthetic models, fuzzing and tests: the same seed gives the same
// values on every machine.

/** mulberry32: a small, fast 32-bit generator; returns floats in [0, 1). */
export function seededRandom(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal by Box–Muller. */
export function normal(rand: () => number): number {
  const u = 1 - rand();
  const v = rand();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/**
 * Heavy-tailed values like trained weights: Student-t with `dof` degrees of freedom, scaled.
 * (A normal divided by the root of a chi-square over dof.)
 */
export function studentT(rand: () => number, dof: number): number {
  let chi = 0;
  for (let i = 0; i < dof; i++) {
    const z = normal(rand);
    chi += z * z;
  }
  return normal(rand) / Math.sqrt(chi / dof);
}

/** Fill `out` with heavy-tailed values of standard deviation about `std`. */
export function fillHeavyTailed(out: Float32Array, rand: () => number, std: number, dof = 5): Float32Array {
  // Var(t_dof) = dof / (dof − 2); normalise so the bulk has the requested spread.
  const norm = std / Math.sqrt(dof / (dof - 2));
  for (let i = 0; i < out.length; i++) out[i] = studentT(rand, dof) * norm;
  return out;
}
