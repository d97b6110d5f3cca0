import { describe, expect, test } from 'vitest';
import { F16_TABLE, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits, bf16BitsToF32 } from '../core/quant/float16.js';
import { seededRandom } from '../core/model/random.js';

describe('float16', () => {
  test('float16 - every finite value round-trips through float32', () => {
    for (let h = 0; h < 65536; h++) {
      const exp = (h >>> 10) & 0x1f;
      if (exp === 31 && (h & 0x3ff) !== 0) continue; // NaN payloads are normalised
      expect(f32ToF16Bits(f16BitsToF32(h))).toBe(h);
    }
  });

  test('float16 - midpoints between neighbours round half to even', () => {
    for (let h = 0; h < 0x7bff; h++) {
      const mid = (F16_TABLE[h]! + F16_TABLE[h + 1]!) / 2; // exact in float32 (one extra bit)
      expect(Math.fround(mid)).toBe(mid);
      const even = (h & 1) === 0 ? h : h + 1;
      expect(f32ToF16Bits(mid)).toBe(even);
      expect(f32ToF16Bits(-mid)).toBe(even | 0x8000);
    }
  });

  test('float16 - random float32 values go to the nearest float16', () => {
    const rand = seededRandom(7);
    for (let k = 0; k < 20000; k++) {
      const v = Math.fround((rand() - 0.5) * 2 ** Math.floor(rand() * 44 - 28));
      const h = f32ToF16Bits(v);
      const got = F16_TABLE[h]!;
      const lo = F16_TABLE[(h & 0x7fff) === 0 ? h : h - 1]!;
      const hi = F16_TABLE[Math.min((h & 0x7fff) + 1, 0x7bff) | (h & 0x8000)]!;
      expect(Math.abs(got - v)).toBeLessThanOrEqual(Math.abs(lo - v));
      expect(Math.abs(got - v)).toBeLessThanOrEqual(Math.abs(hi - v));
    }
  });

  test('float16 - overflow, subnormals and signed zero', () => {
    expect(f32ToF16Bits(65504)).toBe(0x7bff);
    expect(f32ToF16Bits(65519.99)).toBe(0x7bff);
    expect(f32ToF16Bits(65520)).toBe(0x7c00);
    expect(f32ToF16Bits(-1e9)).toBe(0xfc00);
    expect(f32ToF16Bits(2 ** -24)).toBe(1);
    expect(f32ToF16Bits(2 ** -25)).toBe(0);
    expect(f32ToF16Bits(1.5 * 2 ** -25)).toBe(1);
    expect(f32ToF16Bits(3 * 2 ** -25)).toBe(2);
    expect(f32ToF16Bits(-0)).toBe(0x8000);
    expect(f32ToF16Bits(Infinity)).toBe(0x7c00);
    expect(Number.isNaN(f16BitsToF32(f32ToF16Bits(NaN)))).toBe(true);
  });

  test('bfloat16 - round half to even and exact decoding', () => {
    expect(f32ToBf16Bits(1)).toBe(0x3f80);
    // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even mantissa (1.0)
    expect(f32ToBf16Bits(1 + 2 ** -8)).toBe(0x3f80);
    expect(f32ToBf16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82);
    expect(bf16BitsToF32(0xc040)).toBe(-3);
    expect(Number.isNaN(bf16BitsToF32(f32ToBf16Bits(NaN)))).toBe(true);
  });
});
