// Format v2 (double_quant) through the whole pipeline: the issue 12 targets recomputed from the
// written file, verify / dequantize / inspect of v2 files, identical bytes however the job ran,
// the configuration rules, and v1 jobs writing exactly the bytes they wrote before v2 existed.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { resolveConfig } from '../core/config/load.js';
import type { PartialConfig } from '../core/config/schema.js';
import { ConfigError } from '../core/errors.js';
import { runLocalJob } from '../coordinator/local-run.js';
import { OutputFileReader } from '../core/format/output-reader.js';
import { verifyFile } from '../core/format/verify-file.js';
import { dequantizeFile } from '../core/format/dequantize-file.js';
import { layerValues } from '../core/format/layer-values.js';
import { openModel } from '../core/model/model-source.js';
import { buildPlan } from '../core/plan/plan.js';
import { measuredPlan } from '../coordinator/measured-plan.js';
import { referenceKernel } from '../native/reference-kernel.js';
import { projectionQuality } from '../bench/projection-quality.js';
import { FIXTURE_MODELS } from './helpers/cli.js';
import { tempDir } from './helpers/models.js';

const { dir, cleanup } = tempDir('aq-v2-');
afterAll(cleanup);

const F32 = join(FIXTURE_MODELS, 'stories260K-f32.safetensors');
const BF16 = join(FIXTURE_MODELS, 'stories260K-bf16.safetensors');
const run = (model: string, out: string, cfg: PartialConfig = {}, extra: { pieceBytes?: number } = {}) =>
  runLocalJob(model, { output: join(dir, out), config: resolveConfig(cfg), ...extra });
const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

/**
 * SHA-256 of the whole output file of v1 jobs on the fixture, computed with the untouched code of
 * main at 4cbbbda (the commit this branch starts from; `git archive 4cbbbda`, built, then
 * `arrowquant quantize <model> -o out.arrow <flags>`), before format v2 existed.
 */
const V1_GOLDEN: [string, string[], PartialConfig, string][] = [
  ['F32 INT4 g128', ['--bits', '4', '--group-size', '128'], { bit_width: 4, group_size: 128 }, '1d1ff4f43d48478af6bec2b0c127c721ebd7d26deaf4c0bf2ec364a8174a5125'],
  ['F32 INT2 g32 search', ['--bits', '2', '--group-size', '32', '--refine', 'search'], { bit_width: 2, group_size: 32, refine: 'search' }, '6c3d795e148cea01a4665004c072fb66d5109db6964e9f73052125921c54a0fd'],
  ['BF16 INT8 g64 mixed', ['--bits', '8', '--group-size', '64', '--mixed-precision'], { bit_width: 8, group_size: 64, enable_mixed_precision: true }, '2ddb690aedaa8e7d32f49376de61129cf7b734ed922b72df3158ea17277e021b'],
];

describe('quantize v2', () => {
  test('quantize v2 - the issue 12 targets on stories260K F32, recomputed from the written file', async () => {
    const targets = [
      { bits: 4, group: 16, maxBpw: 4.5, minDb: 22.4 },
      { bits: 2, group: 16, maxBpw: 2.625, minDb: 10.0 },
      { bits: 8, group: 32, maxBpw: 8.5, minDb: 45.0 },
    ] as const;
    for (const t of targets) {
      const out = join(dir, `target-${t.bits}.arrow`);
      await run(F32, `target-${t.bits}.arrow`, { bit_width: t.bits, group_size: t.group, double_quant: true, refine: 'search' });
      const q = await projectionQuality(out, F32, referenceKernel);
      expect(q.layers).toBe(35);
      expect(q.bitsPerWeight).toBeLessThanOrEqual(t.maxBpw);
      expect(q.sqnrDb).toBeGreaterThanOrEqual(t.minDb);
      const f = await OutputFileReader.open(out);
      expect(f.metadata.get('arrowquant.format_version')).toBe('2');
      expect(JSON.parse(f.metadata.get('arrowquant.config')!).double_quant).toBe(true);
      expect((await f.layer(2)).quant_type).toBe(`int${t.bits}_dq`);
      await f.close();
    }
  });

  test('quantize v2 - verify recomputes every layer from the columns; dequantize writes those values', async () => {
    const out = join(dir, 'v2-verify.arrow');
    const s = await run(BF16, 'v2-verify.arrow', { bit_width: 4, group_size: 16, double_quant: true, enable_mixed_precision: true });
    const v = await verifyFile(out, BF16, referenceKernel);
    expect(v.problems).toEqual([]);
    const f = await OutputFileReader.open(out);
    let planned = 0;
    for await (const r of f.layers()) planned += r.data.byteLength + 2 * (r.scales.length + r.zero_points.length);
    await f.close();
    expect(s.bytes_out).toBe(planned);
    // the plan's byte accounting is what the v2 job writes
    const plan = buildPlan(openModel(BF16), resolveConfig({ bit_width: 4, group_size: 16, double_quant: true, enable_mixed_precision: true }), null);
    expect(plan.totalBytesOut).toBe(s.bytes_out);
    const st = join(dir, 'v2-deq.safetensors');
    await dequantizeFile(out, st, referenceKernel, 'f32');
    const back = openModel(st);
    const file = await OutputFileReader.open(out);
    const r = await file.layer(3);
    const t = back.tensors[3]!;
    const got = new Float32Array(readFileSync(t.file).buffer.slice(t.dataStart, t.dataStart + t.byteLength));
    expect(Array.from(got)).toEqual(Array.from(layerValues(referenceKernel, r, 0, r.shape[0]!, new Float32Array(got.length))));
    await file.close();
  });

  test('quantize v2 - a tampered super-group factor is caught by verify', async () => {
    const out = join(dir, 'v2-tamper.arrow');
    await run(F32, 'v2-tamper.arrow', { bit_width: 2, group_size: 16, double_quant: true });
    const f = await OutputFileReader.open(out);
    const r = await f.layer(2);
    await f.close();
    const bytes = readFileSync(out);
    // find the layer's first super-group scale (float16 bits) in the file and bump it
    const needle = Buffer.from(new Uint16Array([r.scales[0]!, r.scales[1]!]).buffer);
    const at = bytes.indexOf(needle);
    expect(at).toBeGreaterThan(0);
    bytes[at] ^= 0x40;
    const tampered = join(dir, 'v2-tampered.arrow');
    (await import('node:fs')).writeFileSync(tampered, bytes);
    const v = await verifyFile(tampered, F32, referenceKernel);
    expect(v.ok).toBe(false);
    expect(v.problems.some((p) => /sqnr_db .* but recomputed|cosine .* but recomputed/.test(p))).toBe(true);
  });

  test('quantize v2 - the same bytes across thread counts, piece sizes and kernels', async () => {
    const cfg: PartialConfig = { bit_width: 4, group_size: 16, double_quant: true };
    await run(BF16, 'v2-det-a.arrow', { ...cfg, num_threads: 2 });
    await run(BF16, 'v2-det-b.arrow', { ...cfg, num_threads: 1 }, { pieceBytes: 2048 });
    process.env.ARROW_QUANT_KERNEL = 'reference';
    try {
      const ref = await run(BF16, 'v2-det-c.arrow', { ...cfg, num_threads: 2 }, { pieceBytes: 8192 });
      expect(ref.kernel).toBe('reference');
    } finally {
      delete process.env.ARROW_QUANT_KERNEL;
    }
    const a = sha(join(dir, 'v2-det-a.arrow'));
    expect(sha(join(dir, 'v2-det-b.arrow'))).toBe(a);
    expect(sha(join(dir, 'v2-det-c.arrow'))).toBe(a);
  });

  test('quantize v2 - target size and measured allocation count v2 bytes and write what they planned', async () => {
    const cfg: PartialConfig = {
      bit_width: 4, group_size: 16, double_quant: true, enable_mixed_precision: true, target_model_size_mb: 0.21, allocation_strategy: 'measured',
    };
    const planned = await measuredPlan(BF16, resolveConfig(cfg));
    expect(planned.targetMet).toBe(true);
    expect(planned.totalBytesOut).toBeLessThanOrEqual(210000);
    const s = await run(BF16, 'v2-measured.arrow', cfg);
    expect(s.bytes_out).toBe(planned.totalBytesOut);
    const f = await OutputFileReader.open(join(dir, 'v2-measured.arrow'));
    let i = 0;
    for await (const r of f.layers()) {
      expect(r.bit_width).toBe(planned.layers[i++]!.bits);
      if (r.bit_width < 16) expect(r.quant_type).toBe(`int${r.bit_width}_dq`);
    }
    await f.close();
    // the heuristic's target-size pass too
    const h = buildPlan(openModel(BF16), resolveConfig({ ...cfg, allocation_strategy: 'heuristic' }), null);
    expect(h.totalBytesOut).toBeLessThanOrEqual(210000);
    const hs = await run(BF16, 'v2-heuristic.arrow', { ...cfg, allocation_strategy: 'heuristic' });
    expect(hs.bytes_out).toBe(h.totalBytesOut);
  });

  test('quantize v2 - group_size 16 needs double_quant, and double_quant needs 16 or 32', () => {
    expect(() => resolveConfig({ group_size: 16 })).toThrow(ConfigError);
    expect(() => resolveConfig({ group_size: 16 })).toThrow('group_size 16 needs double_quant: true (format v2); without it allowed: 32, 64, 128, 256');
    expect(() => resolveConfig({ double_quant: true })).toThrow('double_quant: true needs group_size 16 or 32, but group_size is 128; allowed: 16, 32');
    expect(resolveConfig({ double_quant: true, group_size: 32 }).double_quant).toBe(true);
  });

  for (const [name, , cfg, golden] of V1_GOLDEN) {
    test(`quantize v2 - a v1 job writes the bytes main wrote before v2 (${name})`, async () => {
      const model = name.startsWith('BF16') ? BF16 : F32;
      const out = `v1-${golden.slice(0, 12)}.arrow`;
      await run(model, out, cfg);
      expect(sha(join(dir, out))).toBe(golden);
      const f = await OutputFileReader.open(join(dir, out));
      expect(f.metadata.get('arrowquant.format_version')).toBe('1');
      expect('double_quant' in JSON.parse(f.metadata.get('arrowquant.config')!)).toBe(false);
      await f.close();
    });
  }
});

describe('measured allocation with v2', () => {
  test('measured allocation with v2 - candidates span both encodings; the file follows the plan layer by layer', async () => {
    const { layerCandidates } = await import('../core/plan/candidates.js');
    const cfg = resolveConfig({ bit_width: 4, group_size: 16, double_quant: true, enable_mixed_precision: true, allocation_strategy: 'measured', target_model_size_mb: 0.16 });
    const plan = buildPlan(openModel(BF16), cfg, null);
    const q = plan.layers.find((l) => l.name === 'model.layers.0.mlp.down_proj.weight')!;
    const labels = layerCandidates(q, cfg).candidates.map((c) => `${c.bits}/${c.groupSize}/${c.encoding}`);
    expect(labels).toEqual(expect.arrayContaining(['2/16/v2', '2/32/v2', '4/16/v2', '8/32/v2', '2/32/v1', '4/128/v1', '8/256/v1', '16/0/null']));
    expect(layerCandidates(q, { ...cfg, double_quant: false }).candidates.every((c) => c.encoding !== 'v2')).toBe(true);
    const planned = await measuredPlan(BF16, cfg, { cacheDir: null });
    expect(planned.totalBytesOut).toBeLessThanOrEqual(160000);
    const s = await run(BF16, 'v2-mixed.arrow', cfg);
    expect(s.bytes_out).toBe(planned.totalBytesOut);
    const f = await OutputFileReader.open(join(dir, 'v2-mixed.arrow'));
    let i = 0;
    for await (const r of f.layers()) {
      const l = planned.layers[i++]!;
      expect([r.bit_width, r.group_size]).toEqual([l.bits, l.groupSize]);
      if (r.bit_width < 16) expect(r.quant_type).toBe(`int${r.bit_width}${l.doubleQuant ? '_dq' : ''}`);
    }
    await f.close();
    const v = await verifyFile(join(dir, 'v2-mixed.arrow'), BF16, referenceKernel);
    expect([v.ok, v.problems]).toEqual([true, []]);
  });
});
