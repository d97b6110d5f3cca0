import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import {
  LOG_STEPS, dequantizeRowsV2Ref, quantizeRowsV2Ref, readField, scaleMultiplier, v2LayerBytes, v2Layout, v2ParamBytes,
  v2Params, v2SuperGroups, type QuantizeRowsV2Output, type V2GroupSize,
} from '../core/quant/reference-v2.js';
import { groupsPerRow, packedBytes, type QuantBits } from '../core/quant/reference.js';
import { F16_TABLE } from '../core/quant/float16.js';
import { fillHeavyTailed, seededRandom } from '../core/model/random.js';

export function v2OutFor(rows: number, cols: number, bits: QuantBits, groupSize: V2GroupSize): QuantizeRowsV2Output {
  const layout = v2Layout(bits, groupSize);
  const groups = rows * groupsPerRow(cols, groupSize);
  return {
    packed: new Uint8Array(packedBytes(rows * cols, bits)),
    groupParams: new Uint8Array(v2ParamBytes(groups, layout)),
    superScales: new Uint16Array(v2SuperGroups(groups, layout)),
    superOffsets: new Uint16Array(v2SuperGroups(groups, layout)),
    rowStats: new Float64Array(rows * 4),
  };
}

function roundTrip(values: Float32Array, rows: number, cols: number, bits: QuantBits, groupSize: V2GroupSize) {
  const out = v2OutFor(rows, cols, bits, groupSize);
  expect(quantizeRowsV2Ref({ values, rows, cols, bits, groupSize }, out)).toBe(-1);
  const deq = new Float32Array(rows * cols);
  dequantizeRowsV2Ref({ ...out, firstGroup: 0, rows, cols, bits, groupSize }, deq);
  return { out, deq };
}

const fr = Math.fround;

/** The fixture's attention and MLP projections (rows 64 and 172 wide). */
function fixtureProjections(): { rows: number; cols: number; values: Float32Array }[] {
  const buf = readFileSync('test/fixtures/stories260K/stories260K-f32.safetensors');
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString()) as Record<string, { shape: number[]; data_offsets: [number, number] }>;
  return Object.entries(header)
    .filter(([k, v]) => k !== '__metadata__' && v.shape.length === 2 && /self_attn|mlp/.test(k))
    .map(([, v]) => {
      const [s, e] = v.data_offsets;
      const values = new Float32Array(buf.buffer.slice(buf.byteOffset + 8 + n + s, buf.byteOffset + 8 + n + e));
      return { rows: v.shape[0]!, cols: v.shape[1]!, values };
    });
}

describe('quant reference v2', () => {
  test('quant reference v2 - LOG_STEPS are fround(2^(-j/4)) and μ is exact', () => {
    expect(LOG_STEPS).toEqual([0, 1, 2, 3].map((j) => fr(2 ** (-j / 4))));
    const layout = v2Layout(4, 16);
    expect([7, 6, 5, 4, 3, 0].map((q) => scaleMultiplier(q, layout))).toEqual([1, LOG_STEPS[1], LOG_STEPS[2], LOG_STEPS[3], 0.5, fr(LOG_STEPS[3]! / 2)]);
    expect(scaleMultiplier(37, v2Layout(8, 32))).toBe(37);
  });

  test('quant reference v2 - stored params reproduce every ŵ the statistics used', () => {
    const rand = seededRandom(5);
    for (const [bits, g] of [[4, 16], [4, 32], [2, 16], [2, 32], [8, 32], [8, 16]] as [QuantBits, V2GroupSize][]) {
      for (const cols of [1, 7, 17, 33, 64, 172]) {
        const rows = 9;
        const values = fillHeavyTailed(new Float32Array(rows * cols), rand, 0.02);
        const { out, deq } = roundTrip(values, rows, cols, bits, g);
        for (let r = 0; r < rows; r++) {
          let e2 = 0;
          let w2 = 0;
          for (let c = 0; c < cols; c++) {
            const e = fr(values[r * cols + c]! - deq[r * cols + c]!);
            e2 += e * e;
            w2 += values[r * cols + c]! ** 2;
          }
          // float32 lanes against a float64 loop: equal to float32 rounding
          expect(Math.abs(out.rowStats[r * 4 + 1]! - e2)).toBeLessThanOrEqual(1e-5 * e2);
          expect(Math.abs(out.rowStats[r * 4]! - w2)).toBeLessThanOrEqual(1e-5 * w2);
        }
      }
    }
  });

  test('quant reference v2 - super-groups span rows; the tail super-group has the rest', () => {
    // INT8 g32: 16 groups per super-group; 172-wide rows have 6 groups, so super-group 0 is rows 0-1 and 4 groups of row 2.
    const rows = 5;
    const cols = 172;
    const values = new Float32Array(rows * cols);
    for (let i = 0; i < values.length; i++) values[i] = Math.floor(i / cols) < 2 ? (i % 7) * 0.01 - 0.03 : (i % 7) * 10 - 30;
    const { out } = roundTrip(values, rows, cols, 8, 32);
    expect(out.superScales.length).toBe(2); // 30 groups → 16 + 14
    expect(out.groupParams.length).toBe((30 * 12) / 8);
    // Rows 2..4 are 1000× larger: both super-groups contain them, so both have large factors.
    expect(F16_TABLE[out.superScales[0]!]!).toBeGreaterThan(0.001);
    expect(F16_TABLE[out.superScales[1]!]!).toBeGreaterThan(0.001);
    // Group 0 (row 0, small values) gets a small integer scale under super-group 0's factor.
    expect(readField(out.groupParams, 0, 6)).toBeLessThan(2);
  });

  test('quant reference v2 - zeros, constants, one outlier, ±max and subnormals', () => {
    const cases: Float32Array[] = [
      new Float32Array(48),
      new Float32Array(48).fill(-0.25),
      new Float32Array(48).fill(0.25),
      Float32Array.from({ length: 48 }, (_, i) => (i === 20 ? 1000 : (i % 5) * 0.01)),
      Float32Array.from({ length: 48 }, (_, i) => (i % 2 ? 3.4028234663852886e38 : -3.4028234663852886e38)),
      Float32Array.from({ length: 48 }, (_, i) => (i % 3) * 1e-45),
    ];
    for (const values of cases) {
      for (const [bits, g] of [[4, 16], [2, 16], [8, 32]] as [QuantBits, V2GroupSize][]) {
        const { deq } = roundTrip(values, 1, 48, bits, g);
        for (const v of deq) expect(Number.isFinite(v)).toBe(true);
      }
    }
    const zeros = roundTrip(new Float32Array(48), 1, 48, 4, 16);
    expect(Array.from(zeros.deq)).toEqual(new Array(48).fill(0));
    const neg = roundTrip(new Float32Array(48).fill(-0.25), 1, 48, 4, 16);
    for (const v of neg.deq) expect(Math.abs(v + 0.25)).toBeLessThan(0.25 / 8);
  });

  test('quant reference v2 - NaN and ±Inf: the index of the first, nothing written', () => {
    const values = new Float32Array(40).fill(0.5);
    values[33] = NaN;
    values[35] = Infinity;
    const out = v2OutFor(1, 40, 4, 16);
    expect(quantizeRowsV2Ref({ values, rows: 1, cols: 40, bits: 4, groupSize: 16 }, out)).toBe(33);
    expect(out.packed.every((b) => b === 0) && out.superScales.every((b) => b === 0)).toBe(true);
  });

  test('quant reference v2 - reconstruction formula of format.md', () => {
    const layout = v2Layout(2, 16);
    const p = v2Params(0.125, 0.0625, 3, 5, layout);
    expect(p).toEqual({ scale: 0.375, offset: 0.3125, inv: fr(1 / 0.375) });
    expect(v2LayerBytes(64, 172, 2, 16)).toBe(packedBytes(64 * 172, 2) + 64 * 11 + 4 * Math.ceil((64 * 11) / 32));
  });

  test('quant reference v2 - the issue 12 targets on stories260K F32 (weighted SQNR, bits per weight)', () => {
    const layers = fixtureProjections();
    expect(layers.length).toBe(35);
    const measure = (bits: QuantBits, g: V2GroupSize) => {
      let w2 = 0;
      let e2 = 0;
      let bytes = 0;
      let params = 0;
      for (const l of layers) {
        const out = v2OutFor(l.rows, l.cols, bits, g);
        quantizeRowsV2Ref({ values: l.values, rows: l.rows, cols: l.cols, bits, groupSize: g }, out);
        for (let r = 0; r < l.rows; r++) {
          w2 += out.rowStats[r * 4]!;
          e2 += out.rowStats[r * 4 + 1]!;
        }
        bytes += v2LayerBytes(l.rows, l.cols, bits, g);
        params += l.rows * l.cols;
      }
      return { sqnr: 10 * Math.log10(w2 / e2), bpw: (bytes * 8) / params };
    };
    const int4 = measure(4, 16);
    const int2 = measure(2, 16);
    const int8 = measure(8, 32);
    expect(int4.bpw).toBeLessThanOrEqual(4.5);
    expect(int4.sqnr).toBeGreaterThanOrEqual(22.4);
    expect(int2.bpw).toBeLessThanOrEqual(2.625);
    expect(int2.sqnr).toBeGreaterThanOrEqual(10.0);
    expect(int8.bpw).toBeLessThanOrEqual(8.5);
    expect(int8.sqnr).toBeGreaterThanOrEqual(45.0);
  });
});
