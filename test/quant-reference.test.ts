import { describe, expect, test } from 'vitest';
import {
  chooseParams, dequantizeRowsRef, groupsPerRow, packedBytes, quantizeRowsRef, rne,
  type QuantBits, type QuantizeRowsOutput,
} from '../core/quant/reference.js';
import { F16_TABLE, f32ToF16Bits } from '../core/quant/float16.js';
import { fillHeavyTailed, seededRandom } from '../core/model/random.js';

function outFor(rows: number, cols: number, bits: number, groupSize: number): QuantizeRowsOutput {
  const g = rows * groupsPerRow(cols, groupSize);
  return {
    packed: new Uint8Array(packedBytes(rows * cols, bits)),
    scales: new Uint16Array(g),
    zeroPoints: new Uint16Array(g),
    rowStats: new Float64Array(rows * 4),
  };
}

function roundTrip(values: Float32Array, rows: number, cols: number, bits: QuantBits, groupSize: number, refine = false) {
  const out = outFor(rows, cols, bits, groupSize);
  expect(quantizeRowsRef({ values, rows, cols, bits, groupSize, refine }, out)).toBe(-1);
  const deq = new Float32Array(rows * cols);
  dequantizeRowsRef({ ...out, rows, cols, bits, groupSize }, deq);
  return { out, deq };
}

describe('quant reference', () => {
  test('quant reference - rne rounds half to even', () => {
    expect([0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, 2.4999, 2.5001].map(rne)).toEqual([0, 2, 2, 4, -0, -2, -2, 2, 3]);
  });

  test('quant reference - packing order is LSB first, continuous across rows', () => {
    // 2 rows × 3 cols at 4 bits, group 32: codes of the flattened tensor in order.
    // Row values 0..15 spread so that codes equal the values.
    const values = new Float32Array([0, 15, 7, 0, 1, 15]);
    const { out } = roundTrip(values, 2, 3, 4, 32);
    // row 0: min 0 max 15 → scale 1 zero 0 → codes 0,15,7 ; row 1: codes 0,1,15
    expect(Array.from(out.packed)).toEqual([0x0 | (15 << 4), 7 | (0 << 4), 1 | (15 << 4)]);
    const two = roundTrip(new Float32Array([0, 3, 1, 2, 3]), 1, 5, 2, 32);
    // codes 0,3,1,2 | 3 → byte0 = 0 | 3<<2 | 1<<4 | 2<<6, byte1 = 3
    expect(Array.from(two.out.packed)).toEqual([0 | (3 << 2) | (1 << 4) | (2 << 6), 3]);
  });

  test('quant reference - constant group stores scale 1 and reproduces the constant', () => {
    const values = new Float32Array(40).fill(0.3);
    const { out, deq } = roundTrip(values, 1, 40, 4, 32);
    expect(out.scales[0]).toBe(0x3c00);
    expect(F16_TABLE[out.zeroPoints[0]!]).toBe(-F16_TABLE[f32ToF16Bits(0.3)]!);
    for (const v of deq) expect(v).toBe(F16_TABLE[f32ToF16Bits(0.3)]);
  });

  test('quant reference - error is within half a step per element', () => {
    const rand = seededRandom(3);
    for (const bits of [2, 4, 8] as QuantBits[]) {
      for (const cols of [1, 7, 31, 33, 127, 129, 172]) {
        const rows = 3;
        const values = fillHeavyTailed(new Float32Array(rows * cols), rand, 0.02);
        const { out, deq } = roundTrip(values, rows, cols, bits, 32);
        const gpr = groupsPerRow(cols, 32);
        for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) {
          const s = F16_TABLE[out.scales[r * gpr + Math.floor(c / 32)]!]!;
          expect(Math.abs(values[r * cols + c]! - deq[r * cols + c]!)).toBeLessThanOrEqual(s * 0.5 + s * 2 ** -9 + 1e-12);
        }
      }
    }
  });

  test('quant reference - refine search never increases the squared error', () => {
    const rand = seededRandom(11);
    for (const bits of [2, 4] as QuantBits[]) {
      const values = fillHeavyTailed(new Float32Array(8 * 256), rand, 0.02, 3);
      const a = roundTrip(values, 8, 256, bits, 128, false);
      const b = roundTrip(values, 8, 256, bits, 128, true);
      const err = (o: QuantizeRowsOutput) => o.rowStats.filter((_, i) => i % 4 === 1).reduce((s, v) => s + v, 0);
      expect(err(b.out)).toBeLessThan(err(a.out));
    }
  });

  test('quant reference - zero point stays finite for offset groups', () => {
    const p = chooseParams(1000, 1000.0001, 255);
    expect(Number.isFinite(p.zero)).toBe(true);
    expect(Math.abs(p.zero)).toBeLessThanOrEqual(65504);
    const q = chooseParams(-65504, 65504, 3);
    expect(p.scale).toBeGreaterThan(0);
    expect(q.scale).toBe(F16_TABLE[f32ToF16Bits(Math.fround(131008 / 3))]);
  });

  test('quant reference - non-finite input returns its index', () => {
    const values = new Float32Array([1, 2, NaN, 4]);
    const out = outFor(1, 4, 4, 32);
    expect(quantizeRowsRef({ values, rows: 1, cols: 4, bits: 4, groupSize: 32, refine: false }, out)).toBe(2);
  });
});
