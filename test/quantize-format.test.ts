// The output file read with apache-arrow alone and dequantized from the documented columns,
// by code written here from format.md (no project code on the reading side).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { tableFromIPC, type Table } from 'apache-arrow';
import { resolveConfig } from '../core/config/load.js';
import { runLocalJob } from '../coordinator/local-run.js';
import { fillHeavyTailed, seededRandom } from '../core/model/random.js';
import { tempDir, writeModel, type TestTensor } from './helpers/models.js';

const { dir, cleanup } = tempDir('aq-format-');
afterAll(cleanup);

// --- format.md, implemented independently -------------------------------------------------
function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

interface ForeignLayer {
  name: string;
  shape: number[];
  bits: number;
  groupSize: number;
  method: string;
  data: Uint8Array;
  scales: number[];
  zeros: number[];
  eq: Float32Array | null;
  sqnr: number;
  cosine: number;
  sha: string;
}

function foreignLayers(t: Table): ForeignLayer[] {
  const out: ForeignLayer[] = [];
  for (let i = 0; i < t.numRows; i++) {
    const row = t.get(i)!;
    out.push({
      name: row.layer_name,
      shape: Array.from(row.shape.toArray() as BigInt64Array, Number),
      bits: row.bit_width,
      groupSize: row.group_size,
      method: row.method,
      data: row.data,
      scales: Array.from(row.scales.toArray() as Uint16Array, halfToFloat),
      zeros: Array.from(row.zero_points.toArray() as Uint16Array, halfToFloat),
      eq: row.equalization_scales ? (row.equalization_scales.toArray() as Float32Array) : null,
      sqnr: row.sqnr_db,
      cosine: row.cosine,
      sha: row.data_sha256,
    });
  }
  return out;
}

/** ŵ per format.md: codes LSB-first, (q − z)·s in float32, spatial divides by s_j. */
function foreignDequantize(l: ForeignLayer): Float32Array {
  const rows = l.shape.length > 1 ? l.shape[0]! : 1;
  const cols = l.shape.length > 1 ? l.shape.slice(1).reduce((a, b) => a * b, 1) : l.shape[0]!;
  const gpr = Math.ceil(cols / l.groupSize);
  const out = new Float32Array(rows * cols);
  for (let e = 0; e < rows * cols; e++) {
    const bit = e * l.bits;
    const q = (l.data[bit >> 3]! >> (bit & 7)) & ((1 << l.bits) - 1);
    const r = Math.floor(e / cols);
    const c = e % cols;
    const g = r * gpr + Math.floor(c / l.groupSize);
    let v = Math.fround(Math.fround(q - l.zeros[g]!) * l.scales[g]!);
    if (l.eq) v = Math.fround(v / l.eq[c]!);
    out[e] = v;
  }
  return out;
}

function sqnrDb(w: Float32Array, wh: Float32Array): number {
  let s = 0;
  let n = 0;
  for (let i = 0; i < w.length; i++) {
    s += w[i]! * w[i]!;
    n += (w[i]! - wh[i]!) ** 2;
  }
  return n === 0 ? Infinity : 10 * Math.log10(s / n);
}
// -------------------------------------------------------------------------------------------

const TAILS = [1, 7, 31, 33, 127, 129, 172, 1023, 4096];

function tailModel(): TestTensor[] {
  const rand = seededRandom(99);
  const tensors: TestTensor[] = TAILS.map((cols) => {
    const rows = cols >= 1023 ? 2 : 3;
    return { name: `tail.c${cols}.weight`, shape: [rows, cols], values: fillHeavyTailed(new Float32Array(rows * cols), rand, 0.05) };
  });
  tensors.push({ name: 'vec.a.weight', shape: [7], values: fillHeavyTailed(new Float32Array(7), rand, 0.05) });
  tensors.push({ name: 'vec.b.weight', shape: [129], values: fillHeavyTailed(new Float32Array(129), rand, 0.05) });
  tensors.push({ name: 'conv.weight', shape: [4, 3, 3, 3], values: fillHeavyTailed(new Float32Array(108), rand, 0.05) });
  return tensors;
}

async function quantizeToTable(model: string, out: string, cfg: Parameters<typeof resolveConfig>[0]): Promise<Table> {
  await runLocalJob(model, { output: out, config: resolveConfig({ min_accuracy: 0, min_layer_cosine: { 2: 0, 4: 0, 8: 0 }, ...cfg }) });
  return tableFromIPC(readFileSync(out));
}

describe('quantize format', () => {
  test('quantize format - every width and group size round-trips on every tail, read by apache-arrow alone', async () => {
    const tensors = tailModel();
    const model = await writeModel(join(dir, 'tails.safetensors'), tensors, 'F32');
    for (const bits of [2, 4, 8] as const) {
      for (const groupSize of [32, 64, 128, 256] as const) {
        const t = await quantizeToTable(model, join(dir, `tails-${bits}-${groupSize}.arrow`), { bit_width: bits, group_size: groupSize });
        expect(t.schema.fields.map((f) => f.name)).toContain('time_group_params');
        const layers = foreignLayers(t);
        expect(layers.map((l) => l.name)).toEqual(tensors.map((x) => x.name));
        layers.forEach((l, i) => {
          const w = tensors[i]!.values;
          const rows = l.shape.length > 1 ? l.shape[0]! : 1;
          const cols = w.length / rows;
          expect([l.bits, l.groupSize, l.method]).toEqual([bits, groupSize, 'base']);
          expect(l.data.byteLength).toBe(Math.ceil((w.length * bits) / 8));
          expect(l.scales.length).toBe(rows * Math.ceil(cols / groupSize));
          const wh = foreignDequantize(l);
          const gpr = Math.ceil(cols / groupSize);
          for (let e = 0; e < w.length; e++) {
            const g = Math.floor(e / cols) * gpr + Math.floor((e % cols) / groupSize);
            const s = l.scales[g]!;
            const slack = Math.abs(l.zeros[g]!) * s * 2 ** -10 + 1e-7;
            expect(Math.abs(w[e]! - wh[e]!), `${l.name} element ${e} at ${bits}/${groupSize}`).toBeLessThanOrEqual(0.5 * s + slack);
          }
          expect(Math.abs(l.sqnr - sqnrDb(w, wh))).toBeLessThan(1e-3);
        });
      }
    }
  });

  test('quantize format - packed bytes of tiny layers, by hand', async () => {
    const model = await writeModel(join(dir, 'tiny.safetensors'), [
      { name: 'two.weight', shape: [1, 5], values: Float32Array.of(0, 1, 2, 3, 3) },
      { name: 'four.weight', shape: [2, 3], values: Float32Array.of(0, 15, 7, 0, 1, 15) },
    ], 'F32');
    const l2 = foreignLayers(await quantizeToTable(model, join(dir, 'tiny2.arrow'), { bit_width: 2 }))[0]!;
    // min 0, max 3 → scale 1, zero 0; codes 0,1,2,3 | 3
    expect(Array.from(l2.data)).toEqual([0b11100100, 0b11]);
    const l4 = foreignLayers(await quantizeToTable(model, join(dir, 'tiny4.arrow'), { bit_width: 4 }))[1]!;
    // rows are not padded: codes 0,15,7,0,1,15 → bytes 0xF0, 0x07, 0xF1
    expect(Array.from(l4.data)).toEqual([0xf0, 0x07, 0xf1]);
  });

  test('quantize format - constant groups, an outlier, ±65504 and subnormals', async () => {
    const outlier = new Float32Array(256).map((_, i) => ((i * 37) % 11) / 1000 - 0.005);
    outlier[3] = 100;
    const model = await writeModel(join(dir, 'edges.safetensors'), [
      { name: 'const.weight', shape: [2, 40], values: new Float32Array(80).fill(0.3) },
      { name: 'outlier.weight', shape: [1, 256], values: outlier },
      { name: 'max.weight', shape: [1, 64], values: new Float32Array(64).map((_, i) => (i % 2 ? 65504 : -65504) * (i % 3 ? 1 : 0.5)) },
      { name: 'subnormal.weight', shape: [1, 32], values: new Float32Array(32).map((_, i) => (i + 1) * 1e-40) },
      { name: 'zeros.weight', shape: [1, 32], values: new Float32Array(32) },
    ], 'F32');
    const layers = foreignLayers(await quantizeToTable(model, join(dir, 'edges.arrow'), { bit_width: 8, group_size: 128 }));
    const [c, o, m, s, z] = layers.map((l) => ({ l, wh: foreignDequantize(l) }));
    expect(c!.l.scales).toEqual([1, 1]);
    expect(new Set(c!.wh)).toEqual(new Set([halfToFloat(0x34cd)])); // float16 of 0.3
    // the outlier widens only its own group
    expect(o!.l.scales[1]!).toBeLessThan(o!.l.scales[0]! / 100);
    expect(Math.abs(o!.wh[3]! - 100)).toBeLessThanOrEqual(o!.l.scales[0]! / 2);
    expect(m!.l.scales.every((x) => Number.isFinite(x) && x > 0)).toBe(true);
    expect(Math.max(...Array.from(m!.wh, Math.abs))).toBeLessThanOrEqual(65504 + m!.l.scales[0]!);
    for (const x of [s!, z!]) {
      expect(x.wh.every(Number.isFinite)).toBe(true);
      expect(x.l.scales.every((v) => v > 0)).toBe(true);
    }
    expect(z!.l.sqnr).toBe(Infinity);
    expect(z!.l.cosine).toBe(1);
    expect(layers.every((l) => !Number.isNaN(l.sqnr) && !Number.isNaN(l.cosine))).toBe(true);
  });

  test('quantize format - schema metadata describes config, plan, source and summary', async () => {
    const model = await writeModel(join(dir, 'meta.safetensors'), tailModel().slice(0, 3), 'BF16');
    const t = await quantizeToTable(model, join(dir, 'meta.arrow'), { bit_width: 4 });
    const meta = t.schema.metadata;
    expect(meta.get('arrowquant.format_version')).toBe('1');
    const cfg = JSON.parse(meta.get('arrowquant.config')!);
    expect(cfg).toMatchObject({ bit_width: 4, group_size: 128, refine: 'none', calibration_sha256: null });
    expect(cfg).not.toHaveProperty('num_threads');
    expect(cfg).not.toHaveProperty('calibration_path');
    const plan = JSON.parse(meta.get('arrowquant.plan')!);
    expect(plan[0]).toEqual({ name: 'tail.c1.weight', bits: 4, method: 'base', group_size: 128, planned_bytes: 2 + 12, reason: 'bit_width 4 (mixed precision off)' });
    const source = JSON.parse(meta.get('arrowquant.source')!);
    expect(source).toMatchObject({ model: 'meta', files: ['meta.safetensors'] });
    expect(source.headers_sha256).toMatch(/^[0-9a-f]{64}$/);
    const summary = JSON.parse(meta.get('arrowquant.summary')!);
    expect(summary).toMatchObject({ layers: 3, layers_per_bit_width: { 4: 3 }, fallback_layers: 0 });
    expect(summary.bytes_out).toBe(plan.reduce((s: number, p: { planned_bytes: number }) => s + p.planned_bytes, 0));
    const layers = foreignLayers(t);
    const { createHash } = await import('node:crypto');
    for (const l of layers) expect(createHash('sha256').update(l.data).digest('hex')).toBe(l.sha);
  });
});
