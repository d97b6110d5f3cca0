// Every native kernel variant against the TypeScript reference (core/quant/reference.ts): packed
// bytes, float16 scales and zero points, and the float64 row statistics must be identical.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { fillHeavyTailed, seededRandom } from '../core/model/random.js';
import type { SourceDtype } from '../core/quant/dtype.js';
import { f32ToBf16Bits, f32ToF16Bits } from '../core/quant/float16.js';
import {
  GROUP_SIZES, QUANT_BITS, groupsPerRow, packedBytes, type QuantBits, type QuantizeRowsOutput,
} from '../core/quant/reference.js';
import type { QuantizeCall, QuantKernel } from '../core/quant/kernel.js';
import {
  KernelArgumentError, KernelSelectionError, compiledVariants, nativeAddonStatus, nativeKernel, nativeKernels,
  nativeMemcpy, selectKernel, variantSupport,
} from '../native/kernels.js';
import { referenceKernel } from '../native/reference-kernel.js';

// The brief's row lengths, plus 48, 80, 144 and 272: a last group of 16 (SIMD, not 32-aligned).
const ROW_LENGTHS = [1, 2, 3, 5, 7, 8, 15, 16, 17, 31, 33, 48, 63, 67, 80, 127, 129, 144, 193, 255, 272, 1023];
const DTYPES: SourceDtype[] = ['F32', 'F16', 'BF16'];

const status = nativeAddonStatus();
const support = variantSupport();
const runnable = status.loaded ? nativeKernels() : [];

function outFor(rows: number, cols: number, bits: number, groupSize: number, fill = 0xa5): QuantizeRowsOutput {
  const g = rows * groupsPerRow(cols, groupSize);
  // Pre-filled with garbage: every byte the kernel is responsible for must be written.
  const o = {
    packed: new Uint8Array(packedBytes(rows * cols, bits)).fill(fill),
    scales: new Uint16Array(g).fill(fill * 257),
    zeroPoints: new Uint16Array(g).fill(fill * 257),
    rowStats: new Float64Array(rows * 4).fill(-fill),
  };
  return o;
}

/** Little-endian bytes of `values` in `dtype`, starting at byte offset `offset` of a larger buffer. */
function encode(values: Float32Array, dtype: SourceDtype, offset = 0): Uint8Array {
  let bytes: Uint8Array;
  if (dtype === 'F32') {
    bytes = new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
  } else {
    const u = new Uint16Array(values.length);
    for (let i = 0; i < values.length; i++) u[i] = dtype === 'F16' ? f32ToF16Bits(values[i]!) : f32ToBf16Bits(values[i]!);
    bytes = new Uint8Array(u.buffer);
  }
  if (offset === 0) return bytes;
  const big = new Uint8Array(bytes.length + offset + 5);
  big.set(bytes, offset);
  return big.subarray(offset, offset + bytes.length);
}

/** Bitwise equality of two typed arrays, with the first difference in the message. */
function expectSameBits(got: ArrayBufferView, want: ArrayBufferView, what: string): void {
  const a = new Uint8Array(got.buffer, got.byteOffset, got.byteLength);
  const b = new Uint8Array(want.buffer, want.byteOffset, want.byteLength);
  expect(a.length, `${what}: length`).toBe(b.length);
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) {
      const el = (want as unknown as { BYTES_PER_ELEMENT: number }).BYTES_PER_ELEMENT ?? 1;
      const idx = Math.floor(i / el);
      const g = (got as unknown as ArrayLike<number>)[idx];
      const w = (want as unknown as ArrayLike<number>)[idx];
      expect.fail(`${what}: element ${idx} differs: got ${g}, want ${w}`);
    }
  }
}

function expectSameOutput(got: QuantizeRowsOutput, want: QuantizeRowsOutput, what: string): void {
  expectSameBits(got.packed, want.packed, `${what} packed`);
  expectSameBits(got.scales, want.scales, `${what} scales`);
  expectSameBits(got.zeroPoints, want.zeroPoints, `${what} zeroPoints`);
  expectSameBits(got.rowStats, want.rowStats, `${what} rowStats`);
}

/** Quantize with the reference and with `k`; returns the reference result after comparing. */
function compare(k: QuantKernel, call: QuantizeCall, what: string): number {
  const want = outFor(call.rows, call.cols, call.bits, call.groupSize, 0);
  const wantRet = referenceKernel.quantizeSync(call, want);
  const got = outFor(call.rows, call.cols, call.bits, call.groupSize);
  const ret = k.quantizeSync(call, got);
  expect(ret, `${what}: return value`).toBe(wantRet);
  if (wantRet === -1) expectSameOutput(got, want, what);
  return wantRet;
}

function heavy(n: number, seed: number, std = 0.02, dof = 4): Float32Array {
  return fillHeavyTailed(new Float32Array(n), seededRandom(seed), std, dof);
}

function positiveScales(cols: number, seed: number): Float32Array {
  const r = seededRandom(seed);
  const s = new Float32Array(cols);
  for (let j = 0; j < cols; j++) s[j] = Math.fround(0.25 + 4 * r() * r());
  return s;
}

describe('native kernels', () => {
  test('native kernels - the addon loads and lists its variants', () => {
    expect(status.reason, 'addon load failure').toBeNull();
    expect(status.loaded).toBe(true);
    const compiled = compiledVariants();
    expect(compiled[0]).toBe('scalar');
    if (process.arch === 'x64') expect(compiled).toEqual(['scalar', 'avx2', 'avx512']);
    if (process.arch === 'arm64') expect(compiled).toEqual(['scalar', 'neon']);
    expect(runnable.map((k) => k.variant)).toEqual(support.filter((v) => v.supported).map((v) => v.name));
    expect(runnable.length).toBeGreaterThanOrEqual(1);
  });

  for (const v of support) {
    if (!v.supported) {
      const why = v.name === 'avx512' ? 'this CPU has no AVX-512 (F, BW, VL, DQ)' : `this CPU cannot run ${v.name}`;
      test.skip(`native kernels - ${v.name}: all cases (skipped: ${why})`, () => {});
      test(`native kernels - ${v.name}: asking for it is a clear error`, () => {
        expect(() => nativeKernel(v.name)).toThrow(/cannot run on this CPU/);
        expect(() => selectKernel({ ARROWQUANT_KERNEL: v.name })).toThrow(KernelSelectionError);
      });
    }
  }

  describe.each(runnable.map((k) => [k.variant, k] as const))('%s', (name, k) => {
    test(`native kernels - ${name}: every dtype, bits, group size and row length (RTN and refine, with and without colScale)`, () => {
      let seed = 100;
      for (const dtype of DTYPES) {
        for (const bits of QUANT_BITS) {
          for (const groupSize of GROUP_SIZES) {
            for (const cs of [false, true]) {
              for (const refine of [false, true]) {
                for (const cols of ROW_LENGTHS) {
                  // refine is costly in the reference: fewer rows there
                  const rows = refine ? 1 : 2;
                  const values = heavy(rows * cols, seed++, 0.02, 3 + (seed % 4));
                  const call: QuantizeCall = {
                    src: encode(values, dtype, seed % 3), dtype, rows, cols, bits, groupSize, refine,
                    colScale: cs ? positiveScales(cols, seed) : null,
                  };
                  compare(k, call, `${dtype} int${bits} g${groupSize} cols ${cols} refine ${refine} cs ${cs}`);
                }
              }
            }
          }
        }
      }
    });

    test(`native kernels - ${name}: several seeds of larger heavy-tailed tensors`, () => {
      for (const seed of [1, 2, 3, 4]) {
        for (const [rows, cols, groupSize, bits, refine] of [
          [9, 1023, 128, 4, false], [5, 4096, 128, 2, false], [3, 300, 64, 8, true], [4, 256, 256, 4, true],
          [7, 129, 32, 2, true],
        ] as [number, number, number, QuantBits, boolean][]) {
          for (const dtype of DTYPES) {
            const values = heavy(rows * cols, seed * 31 + cols, 0.05, 3);
            compare(k, { src: encode(values, dtype), dtype, rows, cols, bits, groupSize, refine, colScale: null },
              `seed ${seed} ${dtype} [${rows}, ${cols}] int${bits} g${groupSize} refine ${refine}`);
          }
        }
      }
    });

    test(`native kernels - ${name}: row ranges that start mid-tensor at a multiple of 8 rows`, () => {
      for (const [rows, cols, bits] of [[40, 67, 2], [48, 33, 4], [24, 1023, 2], [32, 5, 2], [16, 129, 8]] as [number, number, QuantBits][]) {
        for (const dtype of DTYPES) {
          const values = heavy(rows * cols, rows + cols, 0.03);
          const all = encode(values, dtype);
          const esz = dtype === 'F32' ? 4 : 2;
          const full = outFor(rows, cols, bits, 32, 0);
          expect(referenceKernel.quantizeSync({ src: all, dtype, rows, cols, bits, groupSize: 32, refine: false, colScale: null }, full)).toBe(-1);
          for (const [r0, r1] of [[0, 8], [8, rows], [16, rows - 8]].filter(([a, b]) => b! > a!) as [number, number][]) {
            // an odd byteOffset: the kernel must not assume alignment
            const src = encode(values.subarray(r0 * cols, r1 * cols), dtype, 1);
            expect(src.byteLength).toBe((r1 - r0) * cols * esz);
            const call: QuantizeCall = { src, dtype, rows: r1 - r0, cols, bits, groupSize: 32, refine: false, colScale: null };
            compare(k, call, `rows ${r0}..${r1} of [${rows}, ${cols}] ${dtype} int${bits}`);
            // and it is the matching part of the whole tensor's output
            const part = outFor(r1 - r0, cols, bits, 32);
            k.quantizeSync(call, part);
            const b0 = (r0 * cols * bits) / 8;
            expect(Number.isInteger(b0)).toBe(true);
            const nb = packedBytes((r1 - r0) * cols, bits);
            expectSameBits(part.packed, full.packed.subarray(b0, b0 + nb), 'packed range');
            const gpr = groupsPerRow(cols, 32);
            expectSameBits(part.scales, full.scales.subarray(r0 * gpr, r1 * gpr), 'scales range');
            expectSameBits(part.rowStats, full.rowStats.subarray(r0 * 4, r1 * 4), 'rowStats range');
          }
        }
      }
    });

    test(`native kernels - ${name}: edge inputs (zeros, signed zeros, constants, outliers, float16 limits, subnormals, huge F32)`, () => {
      const cases: [string, (n: number) => Float32Array, SourceDtype[]][] = [
        ['zeros', (n) => new Float32Array(n), DTYPES],
        ['negative zeros', (n) => new Float32Array(n).fill(-0), DTYPES],
        ['mixed signed zeros and positives', (n) => Float32Array.from({ length: n }, (_, i) => (i % 7 === 3 ? -0 : i % 5 === 0 ? 0 : 0.25 * (i % 3))), DTYPES],
        ['mixed signed zeros and negatives', (n) => Float32Array.from({ length: n }, (_, i) => (i % 6 === 1 ? 0 : i % 4 === 0 ? -0 : -0.5 * (i % 3))), DTYPES],
        ['first zero negative', (n) => Float32Array.from({ length: n }, (_, i) => (i === 9 ? -0 : i % 2 ? 0 : 1)), DTYPES],
        ['constant', (n) => new Float32Array(n).fill(0.3), DTYPES],
        ['negative constant', (n) => new Float32Array(n).fill(-1234.5), DTYPES],
        ['one huge outlier', (n) => { const v = heavy(n, 5, 0.01); v[Math.floor(n / 2)] = 900; return v; }, DTYPES],
        ['±65504', (n) => Float32Array.from({ length: n }, (_, i) => (i % 3 === 0 ? 65504 : i % 3 === 1 ? -65504 : 0.5)), DTYPES],
        ['+65504 only', (n) => new Float32Array(n).fill(65504).map((v, i) => (i % 4 ? v : 65000)), DTYPES],
        ['offset group', (n) => Float32Array.from({ length: n }, (_, i) => 1000 + i * 1e-4), DTYPES],
        ['float32 subnormals', (n) => Float32Array.from({ length: n }, (_, i) => (i % 2 ? 1 : -1) * (i + 1) * 1e-42), ['F32']],
        ['float16 subnormals', (n) => Float32Array.from({ length: n }, (_, i) => (i % 3 - 1) * (i + 1) * 2 ** -24), ['F16', 'F32']],
        ['tiny range', (n) => Float32Array.from({ length: n }, (_, i) => 1 + (i % 2) * 2 ** -20), ['F32']],
        ['beyond float16 in F32', (n) => Float32Array.from({ length: n }, (_, i) => (i % 2 ? 1 : -1) * (i + 1) * 1e6), ['F32', 'BF16']],
        ['squares overflow float32', (n) => Float32Array.from({ length: n }, (_, i) => (i % 2 ? 3e38 : -1e30 * i)), ['F32', 'BF16']],
        ['range overflows float32', (n) => Float32Array.from({ length: n }, (_, i) => (i % 2 ? 3.4e38 : -3.4e38)), ['F32', 'BF16']],
      ];
      for (const [label, make, dtypes] of cases) {
        for (const dtype of dtypes) {
          for (const cols of [1, 7, 16, 33, 128, 129, 300]) {
            for (const bits of QUANT_BITS) {
              for (const refine of [false, true]) {
                const rows = 2;
                const values = make(rows * cols);
                for (const groupSize of [32, 128]) {
                  compare(k, { src: encode(values, dtype), dtype, rows, cols, bits, groupSize, refine, colScale: null },
                    `${label} ${dtype} cols ${cols} int${bits} g${groupSize} refine ${refine}`);
                }
              }
            }
          }
        }
      }
    });

    test(`native kernels - ${name}: unusual colScale values (zero, tiny, huge, negative)`, () => {
      for (const cols of [16, 33, 128, 200]) {
        const values = heavy(3 * cols, cols, 0.1);
        const r = seededRandom(cols);
        const cs = Float32Array.from({ length: cols }, (_, j) => [0, 1e-30, 1e30, -2, 3e38, 1, 0.5][j % 7]! * (1 + r()));
        for (const dtype of DTYPES) {
          for (const bits of QUANT_BITS) {
            for (const refine of [false, true]) {
              compare(k, { src: encode(values, dtype), dtype, rows: 3, cols, bits, groupSize: 32, refine, colScale: cs },
                `colScale edge ${dtype} cols ${cols} int${bits} refine ${refine}`);
            }
          }
        }
      }
    });

    test(`native kernels - ${name}: NaN and ±Inf return the index of the first one`, () => {
      for (const dtype of DTYPES) {
        for (const [rows, cols, groupSize] of [[3, 129, 32], [2, 300, 128], [4, 7, 32], [2, 1023, 256]]) {
          const n = rows * cols;
          const positions = [0, 1, 15, 16, 31, cols - 1, cols, Math.floor(n / 2), n - 1];
          for (const bad of [NaN, Infinity, -Infinity]) {
            for (const pos of positions) {
              if (pos < 0 || pos >= n) continue;
              const values = heavy(n, pos + cols, 0.02);
              values[pos] = bad;
              const ret = compare(k, { src: encode(values, dtype), dtype, rows, cols, bits: 4, groupSize, refine: false, colScale: null },
                `${bad} at ${pos} ${dtype} [${rows}, ${cols}]`);
              expect(ret).toBe(pos);
              // a second one later does not change the answer; one earlier does
              if (pos + 40 < n) {
                values[pos + 40] = NaN;
                expect(k.quantizeSync({ src: encode(values, dtype), dtype, rows, cols, bits: 2, groupSize, refine: true, colScale: positiveScales(cols, 1) },
                  outFor(rows, cols, 2, groupSize))).toBe(pos);
              }
              if (pos >= 1) {
                values[pos - 1] = -Infinity;
                expect(k.quantizeSync({ src: encode(values, dtype), dtype, rows, cols, bits: 8, groupSize, refine: false, colScale: null },
                  outFor(rows, cols, 8, groupSize))).toBe(pos - 1);
              }
            }
          }
        }
      }
    });

    test(`native kernels - ${name}: dequantize equals the reference`, () => {
      for (const bits of QUANT_BITS) {
        for (const groupSize of GROUP_SIZES) {
          for (const [rows, cols] of [[3, 5], [2, 67], [4, 129], [2, 1023], [8, 33]]) {
            for (const cs of [false, true]) {
              const values = heavy(rows * cols, rows * cols + bits, 0.02);
              const colScale = cs ? positiveScales(cols, 3) : null;
              const out = outFor(rows, cols, bits, groupSize, 0);
              referenceKernel.quantizeSync({ src: encode(values, 'F32'), dtype: 'F32', rows, cols, bits, groupSize, refine: false, colScale }, out);
              const args = { packed: out.packed, scales: out.scales, zeroPoints: out.zeroPoints, rows, cols, bits, groupSize, colScale };
              const want = new Float32Array(rows * cols);
              referenceKernel.dequantize(args, want);
              const got = new Float32Array(rows * cols).fill(123);
              k.dequantize(args, got);
              expectSameBits(got, want, `dequantize int${bits} g${groupSize} [${rows}, ${cols}] cs ${cs}`);
            }
          }
        }
      }
    });

    test(`native kernels - ${name}: columnAbsMax equals the reference`, () => {
      for (const dtype of DTYPES) {
        for (const [rows, cols] of [[1, 1], [3, 7], [5, 33], [4, 1023], [2, 4096]]) {
          const values = heavy(rows * cols, cols, 0.5);
          values[0] = -0;
          if (values.length > 3) values[3] = NaN;
          if (values.length > 5) values[5] = -Infinity;
          const src = encode(values, dtype, 1);
          const init = Float32Array.from({ length: cols }, (_, j) => (j % 5 === 0 ? 0.1 : j % 7 === 0 ? NaN : 0));
          const want = init.slice();
          referenceKernel.columnAbsMax(src, dtype, rows, cols, want);
          const got = init.slice();
          k.columnAbsMax(src, dtype, rows, cols, got);
          expectSameBits(got, want, `columnAbsMax ${dtype} [${rows}, ${cols}]`);
        }
      }
    });

    test(`native kernels - ${name}: the async path equals the sync path`, async () => {
      const values = heavy(16 * 300, 77, 0.02);
      const bf = encode(values, 'BF16');
      const shared = new Uint8Array(new SharedArrayBuffer(bf.byteLength));
      shared.set(bf);
      for (const refine of [false, true]) {
        const call: QuantizeCall = { src: shared, dtype: 'BF16', rows: 16, cols: 300, bits: 4, groupSize: 64, refine, colScale: null };
        const a = outFor(16, 300, 4, 64);
        const b = outFor(16, 300, 4, 64, 0x11);
        const [ra, rb] = await Promise.all([k.quantize(call, a), Promise.resolve(k.quantizeSync(call, b))]);
        expect(ra).toBe(-1);
        expect(rb).toBe(-1);
        expectSameOutput(a, b, `async refine ${refine}`);
        compare(k, call, 'SharedArrayBuffer source');
      }
      const bad = heavy(100, 1);
      bad[42] = NaN;
      await expect(k.quantize({ src: encode(bad, 'F32'), dtype: 'F32', rows: 1, cols: 100, bits: 4, groupSize: 32, refine: false, colScale: null },
        outFor(1, 100, 4, 32))).resolves.toBe(42);
    });

    test(`native kernels - ${name}: invalid arguments are rejected with their messages`, async () => {
      const values = heavy(2 * 40, 9);
      const call: QuantizeCall = { src: encode(values, 'F16'), dtype: 'F16', rows: 2, cols: 40, bits: 4, groupSize: 32, refine: false, colScale: null };
      const ok = outFor(2, 40, 4, 32);
      expect(k.quantizeSync(call, ok)).toBe(-1);
      const small = { ...ok, packed: new Uint8Array(39) };
      expect(() => k.quantizeSync(call, small)).toThrow(KernelArgumentError);
      expect(() => k.quantizeSync(call, small)).toThrow('Expected a Uint8Array of at least 40 bytes for out.packed but received 39 bytes');
      await expect(k.quantize(call, small)).rejects.toThrow('for out.packed but received 39 bytes');
      expect(() => k.quantizeSync({ ...call, bits: 3 as QuantBits }, ok)).toThrow('Expected one of 2, 4, 8 for call.bits but received 3');
      expect(() => k.quantizeSync({ ...call, groupSize: 100 }, ok)).toThrow('Expected one of 32, 64, 128, 256 for call.groupSize but received 100');
      expect(() => k.quantizeSync({ ...call, dtype: 'F64' as SourceDtype }, ok)).toThrow('Expected one of F32, F16, BF16 for call.dtype but received "F64"');
      expect(() => k.quantizeSync({ ...call, src: call.src.subarray(1) }, ok)).toThrow('for call.src but received 159 bytes');
      expect(() => k.quantizeSync({ ...call, src: new Float32Array(80) as unknown as Uint8Array }, ok)).toThrow('Expected a Uint8Array (2 × 40 F16) for call.src but received a Float32Array of 320 bytes');
      expect(() => k.quantizeSync({ ...call, rows: 2.5 }, ok)).toThrow('Expected an integer ≥ 0 for call.rows but received 2.5');
      expect(() => k.quantizeSync({ ...call, colScale: new Float32Array(39) }, ok)).toThrow('Expected a Float32Array of 40 elements (cols) for call.colScale but received 39 elements');
      expect(() => k.quantizeSync(call, { ...ok, scales: new Uint16Array(3) })).toThrow('Expected a Uint16Array of at least 4 elements for out.scales but received 3 elements');
      expect(() => k.quantizeSync(call, { ...ok, rowStats: new Float32Array(8) as unknown as Float64Array })).toThrow('for out.rowStats but received a Float32Array');
      expect(() => k.dequantize({ packed: ok.packed, scales: ok.scales, zeroPoints: ok.zeroPoints, rows: 2, cols: 40, bits: 4, groupSize: 32 }, new Float32Array(79)))
        .toThrow('Expected a Float32Array of at least 80 elements for out but received 79 elements');
      expect(() => k.columnAbsMax(call.src, 'F16', 2, 40, new Float32Array(39))).toThrow('Expected a Float32Array of at least 40 elements for out but received 39 elements');
      expect(() => k.columnAbsMax(call.src, 'F32', 2, 40, new Float32Array(40))).toThrow('Expected a Uint8Array (2 × 40 F32) of at least 320 bytes for src but received 160 bytes');
    });
  });

  test('native kernels - selectKernel honours ARROW_QUANT_KERNEL, and ARROWQUANT_KERNEL as its alias', () => {
    expect(selectKernel({ ARROW_QUANT_KERNEL: 'scalar' }).kernel.variant).toBe('scalar');
    expect(selectKernel({ ARROW_QUANT_KERNEL: 'reference', ARROWQUANT_KERNEL: 'scalar' }).kernel.variant).toBe('reference');
    expect(() => selectKernel({ ARROW_QUANT_KERNEL: 'sse9' })).toThrow(
      'Expected one of scalar, avx2, avx512, neon, reference, auto for ARROW_QUANT_KERNEL but received "sse9"');
    const best = runnable.at(-1)!;
    expect(selectKernel({}).kernel.variant).toBe(best.variant);
    expect(selectKernel({}).warning).toBeNull();
    expect(selectKernel({ ARROWQUANT_KERNEL: 'auto' }).kernel.variant).toBe(best.variant);
    expect(selectKernel({ ARROWQUANT_KERNEL: 'reference' }).kernel.variant).toBe('reference');
    expect(selectKernel({ ARROWQUANT_KERNEL: 'scalar' }).kernel.variant).toBe('scalar');
    expect(() => selectKernel({ ARROWQUANT_KERNEL: 'sse9' })).toThrow(
      'Expected one of scalar, avx2, avx512, neon, reference, auto for ARROWQUANT_KERNEL but received "sse9"');
    for (const v of support.filter((s) => !s.supported)) {
      expect(() => selectKernel({ ARROWQUANT_KERNEL: v.name })).toThrow(new RegExp(`ARROWQUANT_KERNEL=${v.name}: .*cannot run on this CPU`));
    }
    // the reference chosen by name still validates its arguments
    const ref = selectKernel({ ARROWQUANT_KERNEL: 'reference' }).kernel;
    expect(() => ref.quantizeSync({ src: new Uint8Array(4), dtype: 'F32', rows: 1, cols: 1, bits: 5 as QuantBits, groupSize: 32, refine: false, colScale: null },
      outFor(1, 1, 4, 32))).toThrow('Expected one of 2, 4, 8 for call.bits but received 5');
  });

  test('native kernels - without the addon, selectKernel falls back to the reference with one warning', () => {
    const root = mkdtempSync(join(tmpdir(), 'aq-no-addon-'));
    try {
      writeFileSync(join(root, 'package.json'), '{}');
      const missing = selectKernel({}, root);
      expect(missing.kernel.variant).toBe('reference');
      expect(missing.warning).toMatch(/^arrowquant: native kernels unavailable \(.*arrowquant_native\.node does not exist.*\); using the TypeScript reference kernels, about \d+× slower$/);
      expect(nativeAddonStatus(root).loaded).toBe(false);
      mkdirSync(join(root, 'native', 'build'), { recursive: true });
      writeFileSync(join(root, 'native', 'build', 'BUILD_FAILED.txt'), 'node-gyp rebuild failed (exit 1):\ngyp info ok\ngyp ERR! stack Error: `make` failed with exit code: 2\n');
      const failed = selectKernel({}, root);
      expect(failed.kernel.variant).toBe('reference');
      expect(failed.warning).toContain('the native build failed (native/build/BUILD_FAILED.txt: node-gyp rebuild failed (exit 1): gyp ERR! stack Error: `make` failed');
      expect(() => selectKernel({ ARROWQUANT_KERNEL: 'avx2' }, root)).toThrow(/ARROWQUANT_KERNEL=avx2 but the native kernels are not available/);
      // the fallback still computes the reference's bytes
      const values = heavy(64, 3);
      const out = outFor(1, 64, 4, 32);
      expect(failed.kernel.quantizeSync({ src: encode(values, 'F32'), dtype: 'F32', rows: 1, cols: 64, bits: 4, groupSize: 32, refine: false, colScale: null }, out)).toBe(-1);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  test('native kernels - memcpy copies the bytes', () => {
    const src = Uint8Array.from({ length: 1000 }, (_, i) => (i * 7) & 255);
    const dst = new Uint8Array(1000);
    expect(nativeMemcpy(dst, src.subarray(3))).toBe(997);
    expect(Array.from(dst.subarray(0, 997))).toEqual(Array.from(src.subarray(3)));
    expect(Array.from(dst.subarray(997))).toEqual([0, 0, 0]);
    // a shorter destination gets min(src, dst) bytes, nothing past its end
    const small = new Uint8Array(new ArrayBuffer(16), 4, 8);
    expect(nativeMemcpy(small, src)).toBe(8);
    expect(Array.from(small)).toEqual(Array.from(src.subarray(0, 8)));
    expect(Array.from(new Uint8Array(small.buffer, 12, 4))).toEqual([0, 0, 0, 0]);
  });
});
