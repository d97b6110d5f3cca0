// Every native variant's format v2 kernel against the TypeScript reference (reference-v2.ts):
// packed codes, integer group params, super-group factors and row statistics bit for bit.
import { describe, expect, test } from 'vitest';
import { fillHeavyTailed, seededRandom } from '../core/model/random.js';
import type { SourceDtype } from '../core/quant/dtype.js';
import { f32ToBf16Bits, f32ToF16Bits } from '../core/quant/float16.js';
import { groupsPerRow, packedBytes, type QuantBits } from '../core/quant/reference.js';
import {
  V2_GROUP_SIZES, v2Layout, v2ParamBytes, v2SuperGroups, type QuantizeRowsV2Output, type V2GroupSize,
} from '../core/quant/reference-v2.js';
import type { QuantizeV2Call, QuantKernel } from '../core/quant/kernel.js';
import { KernelArgumentError, nativeAddonStatus, nativeKernels, variantSupport } from '../native/kernels.js';
import { referenceKernel } from '../native/reference-kernel.js';

const ROW_LENGTHS = [1, 2, 3, 5, 7, 8, 15, 16, 17, 31, 33, 63, 67, 127, 129, 172, 193, 255, 1023];
const DTYPES: SourceDtype[] = ['F32', 'F16', 'BF16'];
const WIDTHS: QuantBits[] = [2, 4, 8];

const status = nativeAddonStatus();
const runnable = status.loaded ? nativeKernels() : [];

function outFor(rows: number, cols: number, bits: QuantBits, g: V2GroupSize, fill = 0xa5): QuantizeRowsV2Output {
  const layout = v2Layout(bits, g);
  const groups = rows * groupsPerRow(cols, g);
  // Pre-filled with garbage: every byte the kernel is responsible for must be written.
  return {
    packed: new Uint8Array(packedBytes(rows * cols, bits)).fill(fill),
    groupParams: new Uint8Array(v2ParamBytes(groups, layout)).fill(fill),
    superScales: new Uint16Array(v2SuperGroups(groups, layout)).fill(fill * 257),
    superOffsets: new Uint16Array(v2SuperGroups(groups, layout)).fill(fill * 257),
    rowStats: new Float64Array(rows * 4).fill(-fill),
  };
}

function encode(values: Float32Array, dtype: SourceDtype): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
  const u = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) u[i] = dtype === 'F16' ? f32ToF16Bits(values[i]!) : f32ToBf16Bits(values[i]!);
  return new Uint8Array(u.buffer);
}

function firstDiff(a: ArrayBufferView, b: ArrayBufferView): number {
  const x = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const y = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  if (x.length !== y.length) return -2;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return i;
  return -1;
}

function compare(k: QuantKernel, call: QuantizeV2Call, what: string): number {
  const want = outFor(call.rows, call.cols, call.bits, call.groupSize, 0);
  const wantRet = referenceKernel.quantizeV2Sync(call, want);
  const got = outFor(call.rows, call.cols, call.bits, call.groupSize);
  expect(k.quantizeV2Sync(call, got), `${what}: return value`).toBe(wantRet);
  if (wantRet === -1) {
    for (const key of ['packed', 'groupParams', 'superScales', 'superOffsets', 'rowStats'] as const) {
      expect(firstDiff(got[key], want[key]), `${what} ${key}: first differing byte`).toBe(-1);
    }
    // and dequantization from the stored columns
    const a = { ...want, firstGroup: 0, rows: call.rows, cols: call.cols, bits: call.bits, groupSize: call.groupSize, colScale: call.colScale };
    const dw = new Float32Array(call.rows * call.cols);
    const dg = new Float32Array(call.rows * call.cols).fill(7);
    referenceKernel.dequantizeV2(a, dw);
    k.dequantizeV2(a, dg);
    expect(firstDiff(dg, dw), `${what} dequantizeV2: first differing byte`).toBe(-1);
  }
  return wantRet;
}

function heavy(n: number, seed: number, std = 0.02, dof = 4): Float32Array {
  return fillHeavyTailed(new Float32Array(n), seededRandom(seed), std, dof);
}

describe('native kernels v2', () => {
  test('native kernels v2 - every compiled variant this CPU runs is tested', () => {
    expect(status.loaded).toBe(true);
    expect(runnable.map((k) => k.variant)).toEqual(variantSupport().filter((v) => v.supported).map((v) => v.name));
  });

  for (const k of runnable) {
    test(`native kernels v2 - ${k.variant}: every tail length, dtype, width and group size`, () => {
      let seed = 1;
      for (const g of V2_GROUP_SIZES) {
        for (const bits of WIDTHS) {
          for (const cols of ROW_LENGTHS) {
            const rows = cols > 200 ? 3 : 5;
            const values = heavy(rows * cols, seed++);
            for (const dtype of DTYPES) {
              compare(k, { src: encode(values, dtype), dtype, rows, cols, bits, groupSize: g, colScale: null }, `${k.variant} ${dtype} int${bits} g${g} ${rows}×${cols}`);
            }
          }
        }
      }
    });

    test(`native kernels v2 - ${k.variant}: super-groups spanning rows, many rows, column scales`, () => {
      // [3, 4096] and [67, 64]: complete super-groups (the direct packing path); the others have short groups
      for (const [rows, cols] of [[67, 64], [40, 172], [129, 17], [3, 4096]] as [number, number][]) {
        const values = heavy(rows * cols, rows + cols);
        const cs = Float32Array.from({ length: cols }, (_, j) => Math.fround(0.25 + ((j * 37) % 11) / 3));
        for (const bits of WIDTHS) {
          for (const g of V2_GROUP_SIZES) {
            compare(k, { src: encode(values, 'BF16'), dtype: 'BF16', rows, cols, bits, groupSize: g, colScale: null }, `${k.variant} ${rows}×${cols} int${bits} g${g}`);
            compare(k, { src: encode(values, 'F32'), dtype: 'F32', rows, cols, bits, groupSize: g, colScale: cs }, `${k.variant} ${rows}×${cols} int${bits} g${g} colScale`);
          }
        }
      }
    });

    test(`native kernels v2 - ${k.variant}: zeros, constant rows, one outlier, ±max, subnormals`, () => {
      const cols = 67;
      const rows = 4;
      const max = 3.4028234663852886e38;
      const cases: [string, Float32Array][] = [
        ['zeros', new Float32Array(rows * cols)],
        ['negative zeros', new Float32Array(rows * cols).fill(-0)],
        ['constant rows', Float32Array.from({ length: rows * cols }, (_, i) => [0.5, -0.25, 0, 3][Math.floor(i / cols)]!)],
        ['one outlier', Float32Array.from(heavy(rows * cols, 9), (v, i) => (i === 70 ? 50 : v))],
        ['±max', Float32Array.from({ length: rows * cols }, (_, i) => (i % 3 === 0 ? max : i % 3 === 1 ? -max : 1))],
        ['F16 range', Float32Array.from({ length: rows * cols }, (_, i) => (i % 2 ? 65504 : -65504))],
        ['subnormals', Float32Array.from({ length: rows * cols }, (_, i) => (i % 5) * 1e-45 - 2e-45)],
      ];
      for (const [name, values] of cases) {
        for (const bits of WIDTHS) {
          for (const g of V2_GROUP_SIZES) {
            const dtypes: SourceDtype[] = name === '±max' || name === 'subnormals' ? ['F32', 'BF16'] : DTYPES;
            for (const dtype of dtypes) {
              compare(k, { src: encode(values, dtype), dtype, rows, cols, bits, groupSize: g, colScale: null }, `${k.variant} ${name} ${dtype} int${bits} g${g}`);
            }
          }
        }
      }
    });

    test(`native kernels v2 - ${k.variant}: NaN and ±Inf give the index of the first one`, () => {
      for (const [i, v] of [[0, NaN], [40, Infinity], [130, -Infinity], [199, NaN]] as [number, number][]) {
        const values = heavy(200, i);
        values[i] = v;
        if (i < 199) values[199] = NaN;
        for (const dtype of DTYPES) {
          expect(compare(k, { src: encode(values, dtype), dtype, rows: 2, cols: 100, bits: 4, groupSize: 16, colScale: null }, `${k.variant} non-finite`)).toBe(i);
        }
      }
    });

    test(`native kernels v2 - ${k.variant}: async quantizeV2 equals the synchronous call`, async () => {
      const values = heavy(64 * 20, 4);
      const call: QuantizeV2Call = { src: encode(values, 'BF16'), dtype: 'BF16', rows: 20, cols: 64, bits: 4, groupSize: 16, colScale: null };
      const a = outFor(20, 64, 4, 16, 0);
      const b = outFor(20, 64, 4, 16, 1);
      expect(k.quantizeV2Sync(call, a)).toBe(-1);
      expect(await k.quantizeV2(call, b)).toBe(-1);
      for (const key of ['packed', 'groupParams', 'superScales', 'superOffsets', 'rowStats'] as const) expect(firstDiff(b[key], a[key])).toBe(-1);
    });
  }

  test('native kernels v2 - bad arguments are KernelArgumentErrors naming the argument', () => {
    const kernels: QuantKernel[] = [...runnable];
    for (const k of kernels) {
      const call: QuantizeV2Call = { src: new Uint8Array(80 * 4), dtype: 'F32', rows: 2, cols: 40, bits: 4, groupSize: 16, colScale: null };
      expect(() => k.quantizeV2Sync({ ...call, groupSize: 64 as V2GroupSize }, outFor(2, 40, 4, 16))).toThrow(KernelArgumentError);
      expect(() => k.quantizeV2Sync({ ...call, groupSize: 64 as V2GroupSize }, outFor(2, 40, 4, 16))).toThrow('Expected one of 16, 32 for call.groupSize but received 64');
      const short = outFor(2, 40, 4, 16);
      short.groupParams = short.groupParams.subarray(1);
      expect(() => k.quantizeV2Sync(call, short)).toThrow(`Expected a Uint8Array of at least ${v2ParamBytes(6, v2Layout(4, 16))} bytes for out.groupParams but received ${v2ParamBytes(6, v2Layout(4, 16)) - 1} bytes`);
      const out = outFor(2, 40, 4, 16);
      expect(() => k.dequantizeV2({ ...out, firstGroup: -1, rows: 2, cols: 40, bits: 4, groupSize: 16 }, new Float32Array(80))).toThrow('Expected an integer ≥ 0 for args.firstGroup but received -1');
    }
  });
});
