// IEEE-754 binary16 and bfloat16 conversions, bit-exact, round half to even.
// These are the reference for the native kernels (F16C `vcvtps2ph` with round-to-nearest
// gives the same bits for every finite float32).

const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);

/** Largest finite float16. */
export const F16_MAX = 65504;

/** float32 (any JS number, first rounded to float32) → float16 bits, round half to even. */
export function f32ToF16Bits(value: number): number {
  F32[0] = value;
  const x = U32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const abs = x & 0x7fffffff;
  if (abs >= 0x7f800000) {
    // Inf stays Inf; NaN stays a quiet NaN with the top of its payload.
    return abs > 0x7f800000 ? sign | 0x7e00 | ((abs >>> 13) & 0x3ff) : sign | 0x7c00;
  }
  // 65520 is the midpoint between 65504 and the next (infinite) step; ties go to even = Inf.
  if (abs >= 0x477ff000) return sign | 0x7c00;
  if (abs >= 0x38800000) {
    // Normal float16: rebias the exponent (127 → 15) and round the 13 dropped bits.
    let h = (abs >>> 13) - (112 << 10);
    const rem = abs & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && (h & 1) === 1)) h += 1;
    return sign | h;
  }
  // 2^-25 is half the smallest subnormal: it and everything below round to zero.
  if (abs <= 0x33000000) return sign;
  // Subnormal float16: value = m · 2^-24.
  const e = abs >>> 23;
  const mant = (abs & 0x7fffff) | 0x800000;
  const shift = 126 - e;
  let h = mant >>> shift;
  const rem = mant & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rem > half || (rem === half && (h & 1) === 1)) h += 1;
  return sign | h;
}

/** float16 bits → its exact value. */
export function f16BitsToF32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant ? NaN : sign * Infinity;
  return sign * (1024 + mant) * 2 ** (exp - 25);
}

/** Lookup table of every float16 value, for dequantizing and decoding F16 tensors. */
export const F16_TABLE: Float32Array = (() => {
  const t = new Float32Array(65536);
  for (let i = 0; i < 65536; i++) t[i] = f16BitsToF32(i);
  return t;
})();

/** Round a number to the nearest float16 value (as a JS number). */
export function roundToF16(value: number): number {
  return F16_TABLE[f32ToF16Bits(value)]!;
}

/** bfloat16 bits → float32 value (exact). */
export function bf16BitsToF32(bits: number): number {
  U32[0] = (bits & 0xffff) << 16;
  return F32[0]!;
}

/** float32 → bfloat16 bits, round half to even; NaN stays a quiet NaN. */
export function f32ToBf16Bits(value: number): number {
  F32[0] = value;
  const x = U32[0]!;
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) | 0x40) & 0xffff;
  const lsb = (x >>> 16) & 1;
  return ((x + 0x7fff + lsb) >>> 16) & 0xffff;
}

/** True when every value is finite and float16 holds it without overflow (|v| < 65520 rounds finite). */
export function fitsF16(values: Float32Array): boolean {
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (!(Math.abs(v) < 65520)) return false;
  }
  return true;
}
