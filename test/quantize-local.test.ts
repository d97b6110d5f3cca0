import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { resolveConfig } from '../core/config/load.js';
import type { PartialConfig } from '../core/config/schema.js';
import { runLocalJob } from '../coordinator/local-run.js';
import { ConfigError, NonFiniteWeightError, QualityBarError, SizeBudgetError, UsageError, exitCodeOf } from '../core/errors.js';
import { OutputFileReader } from '../core/format/output-reader.js';
import { verifyFile } from '../core/format/verify-file.js';
import { dequantizeFile } from '../core/format/dequantize-file.js';
import { openModel } from '../core/model/model-source.js';
import { writeSafetensors } from '../core/model/safetensors-writer.js';
import { SAMPLE_LLAMA, syntheticLlamaTensors } from '../core/model/synthetic-llama.js';
import { fillHeavyTailed, seededRandom } from '../core/model/random.js';
import { referenceKernel } from '../native/reference-kernel.js';
import { quantize, plan as planApi, DiffusionQuantConfig } from '../index.js';
import { tempDir, writeModel } from './helpers/models.js';
import { measuredPlan } from '../coordinator/measured-plan.js';
import { FIXTURE_MODELS } from './helpers/cli.js';

const { dir, cleanup } = tempDir('aq-local-');
afterAll(cleanup);

const BF16 = join(FIXTURE_MODELS, 'stories260K-bf16.safetensors');
const SHARDED = join(FIXTURE_MODELS, 'stories260K-sharded');
let sample: string;

beforeAll(async () => {
  sample = join(dir, 'sample.safetensors');
  await writeSafetensors(sample, syntheticLlamaTensors({ ...SAMPLE_LLAMA, layers: 2, hidden: 128, intermediate: 344, vocab: 256 }, 'BF16', 5));
});

const run = (model: string, out: string, cfg: PartialConfig = {}, extra: { pieceBytes?: number; measurementCacheDir?: string | null } = {}) =>
  runLocalJob(model, { output: join(dir, out), config: resolveConfig(cfg), measurementCacheDir: null, ...extra });

async function rows(path: string) {
  const f = await OutputFileReader.open(path);
  const out = [];
  for await (const r of f.layers()) out.push({ ...r, data: Buffer.from(r.data).toString('base64'), scales: Array.from(r.scales), zero_points: Array.from(r.zero_points) });
  await f.close();
  return out;
}

function noLeftovers(out: string) {
  expect(existsSync(join(dir, out))).toBe(false);
  expect(readdirSync(dir).filter((f) => f.startsWith(`.${out}`) || f.startsWith(`${out}.tmp`))).toEqual([]);
}

describe('quantize local', () => {
  test('quantize local - the same bytes across runs, thread counts, piece sizes and kernels', async () => {
    const a = await run(sample, 'det-a.arrow', { num_threads: 2 });
    await run(sample, 'det-b.arrow', { num_threads: 2 });
    await run(sample, 'det-c.arrow', { num_threads: 1 }, { pieceBytes: 4096 });
    process.env.ARROWQUANT_KERNEL = 'reference';
    try {
      const ref = await run(sample, 'det-d.arrow', { num_threads: 2 }, { pieceBytes: 16384 });
      expect(ref.kernel).toBe('reference');
    } finally {
      delete process.env.ARROWQUANT_KERNEL;
    }
    const bytes = ['a', 'b', 'c', 'd'].map((k) => readFileSync(join(dir, `det-${k}.arrow`)));
    for (const b of bytes.slice(1)) expect(Buffer.compare(b, bytes[0]!)).toBe(0);
    expect(a.threads).toBe(2);
  });

  test('quantize local - the real model at INT4 g128: weighted SQNR ≥ 19 dB, verify agrees', async () => {
    const s = await run(BF16, 'real.arrow');
    expect(s.layers).toBe(48);
    expect(s.layers_per_bit_width).toEqual({ 4: 48 });
    expect(s.weighted_sqnr_db!).toBeGreaterThanOrEqual(19);
    const v = await verifyFile(join(dir, 'real.arrow'), BF16, referenceKernel);
    expect(v.problems).toEqual([]);
    expect(v.ok).toBe(true);
  });

  test('quantize local - single BF16 file and sharded directory give identical layer rows', async () => {
    await run(BF16, 'one.arrow', { refine: 'search' });
    await run(SHARDED, 'shards.arrow', { refine: 'search' });
    expect(await rows(join(dir, 'shards.arrow'))).toEqual(await rows(join(dir, 'one.arrow')));
  });

  test('quantize local - refine search raises the weighted SQNR at INT4 and INT2', async () => {
    for (const bits of [4, 2] as const) {
      const base = await run(BF16, `rtn${bits}.arrow`, { bit_width: bits, min_accuracy: 0 });
      const refined = await run(BF16, `srch${bits}.arrow`, { bit_width: bits, refine: 'search', min_accuracy: 0 });
      expect(refined.weighted_sqnr_db!).toBeGreaterThan(base.weighted_sqnr_db! + 0.2);
    }
  });

  test('quantize local - mixed precision under 0.22 MB writes at most 220000 bytes_out', async () => {
    const s = await run(BF16, 'mixed.arrow', { enable_mixed_precision: true, target_model_size_mb: 0.22 });
    expect(s.bytes_out).toBeLessThanOrEqual(220000);
    expect(s.bytes_out).toBe(217760);
    expect(s.layers_per_bit_width).toEqual({ 2: 15, 4: 20, 16: 13 });
    const f = await OutputFileReader.open(join(dir, 'mixed.arrow'));
    const embed = await f.layer(0);
    await f.close();
    expect([embed.quant_type, embed.method, embed.bit_width, embed.group_size, embed.sqnr_db]).toEqual(['bf16', 'none', 16, 0, Infinity]);
    expect(Buffer.compare(Buffer.from(embed.data), readFileSync(BF16).subarray(openModel(BF16).tensors[0]!.dataStart, openModel(BF16).tensors[0]!.dataStart + 65536))).toBe(0);
  });

  test('quantize local - NaN or Inf in a layer: typed error naming layer and index, no file left', async () => {
    const rand = seededRandom(1);
    const w = fillHeavyTailed(new Float32Array(64 * 64), rand, 0.02);
    w[1234] = NaN;
    const model = await writeModel(join(dir, 'nan.safetensors'), [
      { name: 'ok.weight', shape: [64, 64], values: fillHeavyTailed(new Float32Array(4096), rand, 0.02) },
      { name: 'bad.weight', shape: [64, 64], values: w },
    ]);
    writeFileSync(join(dir, 'nan.arrow'), 'previous contents');
    await expect(run(model, 'nan.arrow')).rejects.toThrow(NonFiniteWeightError);
    await expect(run(model, 'nan.arrow')).rejects.toThrow(/layer "bad\.weight": element 1234 is NaN/);
    expect(readFileSync(join(dir, 'nan.arrow'), 'utf8')).toBe('previous contents');
    const inf = Float32Array.from(w);
    inf[1234] = 1;
    inf[77] = -Infinity;
    const m2 = await writeModel(join(dir, 'inf.safetensors'), [{ name: 'layers.0.w', shape: [64, 64], values: inf }], 'F16');
    await expect(run(m2, 'inf.arrow')).rejects.toThrow(/layer "layers\.0\.w": element 77 is -Infinity/);
    noLeftovers('inf.arrow');
  });

  test('quantize local - a 16-bit passthrough layer keeps its bytes even with NaN', async () => {
    const norm = new Float32Array(16).fill(1);
    norm[3] = NaN;
    const model = await writeModel(join(dir, 'nannorm.safetensors'), [
      { name: 'model.norm.weight', shape: [16], values: norm },
      { name: 'mlp.weight', shape: [16, 16], values: fillHeavyTailed(new Float32Array(256), seededRandom(2), 0.1) },
    ]);
    await run(model, 'nannorm.arrow', { skip_sensitive_layers: true });
    const f = await OutputFileReader.open(join(dir, 'nannorm.arrow'));
    const r = await f.layer(0);
    await f.close();
    const src = openModel(model).tensors[0]!;
    expect(Buffer.from(r.data).equals(readFileSync(model).subarray(src.dataStart, src.dataStart + src.byteLength))).toBe(true);
    expect(r.quant_type).toBe('bf16');
  });

  test('quantize local - F32 layers kept at 16 bits are f16 when they fit, else bf16', async () => {
    const model = await writeModel(join(dir, 'f32keep.safetensors'), [
      { name: 'a.norm.weight', shape: [4], values: Float32Array.of(1, 2, 3, 4) },
      { name: 'b.norm.weight', shape: [4], values: Float32Array.of(1, 2, 3, 1e6) },
    ], 'F32');
    await run(model, 'f32keep.arrow', { skip_sensitive_layers: true });
    const f = await OutputFileReader.open(join(dir, 'f32keep.arrow'));
    const [a, b] = [await f.layer(0), await f.layer(1)];
    await f.close();
    expect([a.quant_type, a.bit_width, a.sqnr_db, a.data.byteLength]).toEqual(['f16', 16, Infinity, 8]);
    expect([b.quant_type, b.bit_width, b.data.byteLength]).toEqual(['bf16', 16, 8]);
  });

  test('quantize local - output path errors fail fast and leave nothing', async () => {
    await expect(run(sample, 'no/such/dir/out.arrow')).rejects.toThrow(UsageError);
    await expect(run(sample, 'no/such/dir/out.arrow')).rejects.toThrow(/directory .* does not exist \(create it first\)/);
    await expect(runLocalJob(sample, { output: dir, config: resolveConfig({}) })).rejects.toThrow(UsageError);
    writeFileSync(join(dir, 'afile'), 'x');
    await expect(run(sample, 'afile/out.arrow')).rejects.toThrow(/afile is not a directory/);
  });

  test('quantize local - a layer below its bar is redone at the next width, recorded in planned_bit_width and notes', async () => {
    const s = await run(BF16, 'bar.arrow', { bit_width: 2, min_layer_cosine: { 2: 0.93 }, min_accuracy: 0 });
    expect(s.fallback_layers).toBeGreaterThan(0);
    const f = await OutputFileReader.open(join(dir, 'bar.arrow'));
    let seen = 0;
    for await (const r of f.layers()) {
      if (r.bit_width !== r.planned_bit_width) {
        seen++;
        expect(r.planned_bit_width).toBe(2);
        expect(r.notes).toMatch(/cosine 0\.\d{4} < 0\.93 at 2 bits; redone at 4 bits/);
        expect(r.cosine).toBeGreaterThanOrEqual(0.9);
      } else {
        expect(r.cosine).toBeGreaterThanOrEqual(0.93);
      }
    }
    await f.close();
    expect(seen).toBe(s.fallback_layers);
  });

  test('quantize local - fail_fast, min_accuracy and a broken budget fail with exit code 3', async () => {
    const ff = run(BF16, 'ff.arrow', { bit_width: 2, min_layer_cosine: { 2: 0.95 }, fail_fast: true });
    await expect(ff).rejects.toThrow(QualityBarError);
    await expect(run(BF16, 'ff.arrow', { bit_width: 2, min_layer_cosine: { 2: 0.95 }, fail_fast: true })).rejects.toThrow(
      /layer "model\.[\w.]+": cosine 0\.\d{4} at 2 bits is below min_layer_cosine 0\.95 \(fail_fast\)/,
    );
    noLeftovers('ff.arrow');
    const acc = run(BF16, 'acc.arrow', { bit_width: 2, min_accuracy: 0.99 });
    await expect(acc).rejects.toThrow(/parameter-weighted mean cosine of the quantized layers is 0\.\d+, below min_accuracy 0\.99/);
    noLeftovers('acc.arrow');
    const budget = run(BF16, 'budget.arrow', { enable_mixed_precision: true, target_model_size_mb: 0.22, min_layer_cosine: { 2: 0.95 } });
    await expect(budget).rejects.toThrow(SizeBudgetError);
    await expect(run(BF16, 'budget.arrow', { enable_mixed_precision: true, target_model_size_mb: 0.22, min_layer_cosine: { 2: 0.95 } })).rejects.toThrow(
      /over the target 220000 bytes; layers redone at more bits: model\.layers\.\d\.mlp\.[\w.]+ \(2→4\)/,
    );
    noLeftovers('budget.arrow');
    // the errors the runs threw carry exit code 3, the code the CLI exits with
    const [ffError, budgetError] = await Promise.all([ff.catch((e: unknown) => e), budget.catch((e: unknown) => e)]);
    expect([exitCodeOf(ffError), exitCodeOf(budgetError)]).toEqual([3, 3]);
  });

  test('quantize local - spatial and time-aware methods from calibration statistics', async () => {
    const rand = seededRandom(3);
    const model = await writeModel(join(dir, 'cal.safetensors'), [
      { name: 'blocks.0.attn.qkv.weight', shape: [32, 48], values: fillHeavyTailed(new Float32Array(32 * 48), rand, 0.05) },
      { name: 'blocks.0.mlp.fc1.weight', shape: [48, 32], values: fillHeavyTailed(new Float32Array(48 * 32), rand, 0.05) },
      { name: 'blocks.0.mlp.fc2.weight', shape: [32, 48], values: fillHeavyTailed(new Float32Array(32 * 48), rand, 0.05) },
    ]);
    const absmax = Array.from({ length: 48 }, (_, j) => (j % 7 === 0 ? 20 : 1) + j / 48);
    const lines = [
      { layer: 'blocks.0.attn.qkv.weight', channel_absmax: absmax },
      ...Array.from({ length: 20 }, (_, t) => ({ layer: 'blocks.0.mlp.fc1.weight', timestep: t * 50, min: -1 - t / 20, max: 1 + t / 10 })),
      { layer: 'blocks.0.mlp.fc2.weight', channel_absmax: [1, 2] },
    ];
    const cal = join(dir, 'cal.jsonl');
    writeFileSync(cal, lines.map((l) => JSON.stringify(l)).join('\n'));
    await run(model, 'cal.arrow', { enable_spatial: true, enable_time_aware: true, num_time_groups: 4, calibration_path: cal, min_accuracy: 0 });
    const f = await OutputFileReader.open(join(dir, 'cal.arrow'));
    const [qkv, fc1, fc2] = [await f.layer(0), await f.layer(1), await f.layer(2)];
    const cfgMeta = f.json<{ calibration_sha256: string }>('arrowquant.config');
    await f.close();
    expect(qkv.method).toBe('spatial');
    expect(qkv.equalization_scales!.length).toBe(48);
    expect(qkv.cosine).toBeGreaterThan(0.98);
    expect(fc1.method).toBe('time_aware');
    expect(fc1.act_bit_width).toBe(8);
    expect(fc1.time_group_params!.map((g) => [g.t_start, g.t_end])).toEqual([[0, 200], [250, 450], [500, 700], [750, 950]]);
    expect(fc2.method).toBe('base');
    expect(fc2.notes).toMatch(/channel_absmax has 2 entries but the layer has 48 input channels; quantized with base/);
    expect(cfgMeta.calibration_sha256).toMatch(/^[0-9a-f]{64}$/);
    const v = await verifyFile(join(dir, 'cal.arrow'), model, referenceKernel);
    expect(v.problems).toEqual([]);
  });

  test('quantize local - verify catches a tampered file; dequantize writes loadable safetensors', async () => {
    const out = join(dir, 'tamper.arrow');
    await run(sample, 'tamper.arrow');
    const dq = join(dir, 'dq.safetensors');
    await dequantizeFile(out, dq, referenceKernel, 'f32');
    const m = openModel(dq);
    expect(m.tensors.map((t) => [t.name, t.shape])).toEqual(openModel(sample).tensors.map((t) => [t.name, t.shape]));
    expect(m.tensors.every((t) => t.dtype === 'F32')).toBe(true);
    const bytes = readFileSync(out);
    const f = await OutputFileReader.open(out);
    const first = await f.layer(1);
    await f.close();
    const at = bytes.indexOf(Buffer.from(first.data.subarray(0, 32)));
    expect(at).toBeGreaterThan(0);
    bytes[at + 5] ^= 0xff;
    writeFileSync(out, bytes);
    const v = await verifyFile(out, sample, referenceKernel);
    expect(v.ok).toBe(false);
    expect(v.problems.join('\n')).toMatch(/layer 1 \(model\.layers\.0\.input_layernorm\.weight\): data_sha256 [0-9a-f]{64} but the data hashes to/);
  });

  test('quantize local - measured allocation: fits the target with less error than the heuristic, and plans what it writes', async () => {
    const cfg = { enable_mixed_precision: true, target_model_size_mb: 0.22, allocation_strategy: 'measured' as const };
    const planned = await measuredPlan(BF16, resolveConfig(cfg), { cacheDir: null });
    expect(planned.targetMet).toBe(true);
    expect(planned.totalBytesOut).toBeLessThanOrEqual(220000);
    // only the 1-D norms stay 16-bit: embeddings and lm_head are allowed down to 8 bits
    expect(planned.layers.filter((l) => l.bits === 16).map((l) => l.name)).toEqual(planned.layers.filter((l) => /norm/.test(l.name)).map((l) => l.name));
    for (const l of planned.layers.filter((x) => /embed|lm_head/.test(x.name))) expect(l.bits).toBe(8);
    for (const l of planned.layers.filter((x) => x.bits < 16)) expect(l.reason).toMatch(/^measured: [248]-bit g(32|64|128|256) v1, relative error \S+ \(optimum over \d+ candidates/);
    expect((await measuredPlan(BF16, resolveConfig(cfg), { cacheDir: null })).layers).toEqual(planned.layers);
    const measured = await run(BF16, 'measured.arrow', cfg);
    const heuristic = await run(BF16, 'heuristic.arrow', { ...cfg, allocation_strategy: 'heuristic' });
    expect(measured.bytes_out).toBe(planned.totalBytesOut);
    expect(measured.weighted_sqnr_db!).toBeGreaterThan(heuristic.weighted_sqnr_db! + 10);
    // the prediction is the kernels' own statistics: the file's summary is exactly it
    expect(measured.weighted_sqnr_db).toBe(planned.allocation!.chosen.weighted_sqnr_db);
    expect(heuristic.weighted_sqnr_db).toBe(planned.allocation!.heuristic.weighted_sqnr_db);
    const f = await OutputFileReader.open(join(dir, 'measured.arrow'));
    let i = 0;
    for await (const r of f.layers()) {
      expect([r.bit_width, r.group_size]).toEqual([planned.layers[i]!.bits, planned.layers[i]!.groupSize]);
      i++;
    }
    expect(f.json('arrowquant.allocation')).toEqual(JSON.parse(JSON.stringify(planned.allocation)));
    await f.close();
    // without a target: the fewest bytes whose cosine meets the bar
    const bars = { 2: 0.9, 4: 0.99, 8: 0.99 };
    const noTarget = await measuredPlan(BF16, resolveConfig({ enable_mixed_precision: true, allocation_strategy: 'measured', min_layer_cosine: bars }), { cacheDir: null });
    const out = await run(BF16, 'measured-bars.arrow', { enable_mixed_precision: true, allocation_strategy: 'measured', min_layer_cosine: bars, min_accuracy: 0 });
    expect(out.fallback_layers).toBe(0);
    expect(out.bytes_out).toBe(noTarget.totalBytesOut);
    expect(noTarget.allocation!.solver).toBe('bars');
    // 2 bits with small groups meets 0.9 for the middle layers; embeddings need 8 (their only width), norms stay 16
    expect(new Set(noTarget.layers.map((l) => l.bits))).toEqual(new Set([2, 8, 16]));
    expect(noTarget.totalBytesOut).toBeLessThan(planned.totalBytesOut);
  });

  test('quantize local - library API: plan and quantize with a progress callback', async () => {
    const cfg = new DiffusionQuantConfig({ enable_mixed_precision: true });
    const p = planApi(sample, { config: cfg });
    expect(p.layers.length).toBe(2 * 9 + 3);
    const seen: number[] = [];
    const s = await quantize(sample, { output: join(dir, 'api.arrow'), config: cfg, onProgress: (x) => seen.push(x.layers_done) });
    expect(seen.at(-1)).toBe(p.layers.length);
    expect(s.bytes_out).toBe(p.total_bytes_out);
    expect(s.output).toBe(join(dir, 'api.arrow'));
    expect(s.warnings).toEqual([]);
  });

  test('quantize local - library API: snake_case like the CLI JSON; bad arguments are typed errors', async () => {
    const p = planApi(sample, { config: { enable_mixed_precision: true, layer_bit_widths: { 'nope.*': 8 } } });
    expect(Object.keys(p).sort()).toEqual(['layers', 'modality', 'target_bytes', 'target_met', 'total_bytes_in', 'total_bytes_out', 'warnings']);
    expect(Object.keys(p.layers[0]!).sort()).toEqual(['bits', 'bytes_in', 'bytes_out', 'dtype', 'group_size', 'method', 'name', 'reason', 'shape']);
    expect(p.warnings).toEqual([`layer_bit_widths key "nope.*" matches no tensor of sample`]);
    const usage = async (f: () => unknown, re: RegExp) => {
      let err: unknown;
      try {
        await f();
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(UsageError);
      expect((err as Error).message).toMatch(re);
    };
    await usage(() => quantize(sample, {} as never), /^quantize\(model, options\): options\.output must be the path of the Arrow file to write, got undefined$/);
    await usage(() => quantize(sample, undefined as never), /options\.output must be the path of the Arrow file to write, got undefined/);
    await usage(() => quantize(42 as never, { output: 'x.arrow' }), /^quantize\(model, options\): model must be the path of a \.safetensors file or a sharded model directory, got a number$/);
    await usage(() => quantize(sample, { output: join(dir, 'cb.arrow'), onProgress: 'yes' as never }), /options\.onProgress must be a function, got "yes"/);
    await usage(() => planApi(sample, 'fast' as never), /^plan\(model, options\): options must be an object, got "fast"$/);
    expect(() => planApi(sample, { config: { bit_width: 3 as never } })).toThrow(ConfigError);
    expect(() => planApi(sample, { config: { bit_width: 3 as never } })).toThrow(/options\.config: bit_width: 3 is not allowed; allowed: 2, 4, 8/);
    expect(existsSync(join(dir, 'cb.arrow'))).toBe(false);
  });
});
