// Encoding float32 values into the source dtypes, beside decoding (core/quant/dtype.ts).
import { describe, expect, test } from 'vitest';
import { decodeToF32, encodeFromF32 } from '../core/quant/dtype.js';

describe('dtype', () => {
  test('dtype - encodeFromF32 is the inverse of decodeToF32 for values the dtype holds', () => {
    const exact = Float32Array.of(0, -0, 1, -2.5, 0.15625, 256, -Infinity, Infinity);
    for (const dtype of ['F32', 'F16', 'BF16'] as const) {
      expect(Array.from(decodeToF32(encodeFromF32(exact, dtype), dtype)), dtype).toEqual(Array.from(exact));
    }
    expect(Number.isNaN(decodeToF32(encodeFromF32(Float32Array.of(NaN), 'BF16'), 'BF16')[0])).toBe(true);
  });

  test('dtype - encodeFromF32 rounds half to even in BF16 and F16', () => {
    // 1 + 2^-8 lies halfway between BF16 neighbours 1 and 1 + 2^-7: ties go to the even one (1)
    const bf = new Uint16Array(encodeFromF32(Float32Array.of(1 + 2 ** -8, 1 + 3 * 2 ** -8), 'BF16').buffer);
    expect(Array.from(bf)).toEqual([0x3f80, 0x3f82]);
    // 1 + 2^-11 lies halfway between F16 neighbours 1 and 1 + 2^-10
    const f16 = new Uint16Array(encodeFromF32(Float32Array.of(1 + 2 ** -11, 1 + 3 * 2 ** -11), 'F16').buffer);
    expect(Array.from(f16)).toEqual([0x3c00, 0x3c02]);
  });
});
