import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { resolveConfig } from '../core/config/load.js';
import { InfeasibleTargetError } from '../core/errors.js';
import { openModel } from '../core/model/model-source.js';
import { buildPlan } from '../core/plan/plan.js';
import { blockNumber } from '../core/plan/bit-allocation.js';
import { detectModality } from '../core/plan/modality.js';
import { quantizedBytesOut } from '../core/plan/layer-bytes.js';
import { loadCalibration, timeGroupParams, equalizationScales } from '../core/quant/calibration.js';
import { CalibrationError } from '../core/errors.js';

const FIXTURES = join(__dirname, 'fixtures', 'stories260K');
const BF16 = join(FIXTURES, 'stories260K-bf16.safetensors');
const dir = mkdtempSync(join(tmpdir(), 'aq-plan-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('plan', () => {
  test('plan - bytes_out follows format.md exactly', () => {
    // [172, 64] at INT4 g128: 11008 codes → 5504 bytes, 172 groups → 688 bytes of scales + zero points
    expect(quantizedBytesOut({ rows: 172, cols: 64 }, 4, 128)).toBe(5504 + 688);
    // [64, 172] at INT2: 2 groups per row (128 + 44)
    expect(quantizedBytesOut({ rows: 64, cols: 172 }, 2, 128)).toBe(2752 + 64 * 2 * 4);
    // odd element counts pad the last byte
    expect(quantizedBytesOut({ rows: 1, cols: 7 }, 2, 32)).toBe(2 + 4);
    expect(quantizedBytesOut({ rows: 3, cols: 5 }, 4, 32, { equalizationScales: 5, timeGroups: 2 })).toBe(8 + 12 + 20 + 32);
  });

  test('plan - the real model under a 0.22 MB target follows the heuristic and fits', () => {
    const cfg = resolveConfig({ enable_mixed_precision: true, target_model_size_mb: 0.22 });
    const plan = buildPlan(openModel(BF16), cfg, null);
    expect(plan.totalBytesOut).toBe(217760);
    expect(plan.targetMet).toBe(true);
    expect(plan.layers.reduce((s, l) => s + l.bytesOut, 0)).toBe(217760);
    for (const l of plan.layers) {
      if (/norm|embed|lm_head/.test(l.name)) expect([l.bits, l.method, l.groupSize]).toEqual([16, 'none', 0]);
      else if (l.name.includes('self_attn')) expect(l.bits).toBe(4);
      else expect(l.bits).toBe(2);
    }
    const up2 = plan.layers.find((l) => l.name === 'model.layers.2.mlp.up_proj.weight')!;
    expect(up2.reason).toBe('depth: block 2 of 5 (40%, middle) → 2');
    const up4 = plan.layers.find((l) => l.name === 'model.layers.4.mlp.up_proj.weight')!;
    expect(up4.reason).toMatch(/late\) → 4; lowered 4→2 for the size target/);
    expect(plan.modality).toBe('text');
  });

  test('plan - single file and sharded directory give the same plan', () => {
    const cfg = resolveConfig({ enable_mixed_precision: true, target_model_size_mb: 0.22 });
    const a = buildPlan(openModel(BF16), cfg, null);
    const b = buildPlan(openModel(join(FIXTURES, 'stories260K-sharded')), cfg, null);
    expect(b.layers).toEqual(a.layers);
    expect(b.totalBytesOut).toBe(a.totalBytesOut);
  });

  test('plan - an impossible target names the smallest reachable size', () => {
    const cfg = resolveConfig({ enable_mixed_precision: true, target_model_size_mb: 0.15 });
    let err: unknown;
    try {
      buildPlan(openModel(BF16), cfg, null);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InfeasibleTargetError);
    expect((err as InfeasibleTargetError).smallestReachableBytes).toBe(202400);
    expect((err as Error).message).toMatch(/the smallest reachable size is 202400 bytes/);
    expect(() => buildPlan(openModel(BF16), resolveConfig({ target_model_size_mb: 0.1 }), null)).toThrow(/turn on enable_mixed_precision/);
  });

  test('plan - uniform widths without mixed precision, sensitive layers kept with skip_sensitive_layers', () => {
    const model = openModel(join(FIXTURES, 'stories260K-f32.safetensors'));
    const plain = buildPlan(model, resolveConfig({ bit_width: 8, group_size: 64 }), null);
    expect(new Set(plain.layers.map((l) => l.bits))).toEqual(new Set([8]));
    expect(plain.totalBytesIn).toBe(585600 * 2);
    const skip = buildPlan(model, resolveConfig({ skip_sensitive_layers: true }), null);
    const norm = skip.layers.find((l) => l.name === 'model.norm.weight')!;
    expect([norm.bits, norm.bytesOut]).toEqual([16, 128]);
    expect(skip.layers.find((l) => l.name.endsWith('q_proj.weight'))!.bits).toBe(4);
  });

  test('plan - manual widths: exact name, then the first matching pattern', () => {
    const cfg = resolveConfig({
      enable_mixed_precision: true,
      layer_bit_widths: { 'model.layers.0.mlp.up_proj.weight': 16, 're:.*mlp\\.up.*': 8, 'model.layers.*.mlp.*': 2, 'lm_head.weight': 4 },
    });
    const plan = buildPlan(openModel(BF16), cfg, null);
    const bits = (n: string) => plan.layers.find((l) => l.name === n)!.bits;
    expect(bits('model.layers.0.mlp.up_proj.weight')).toBe(16);
    expect(bits('model.layers.3.mlp.up_proj.weight')).toBe(8);
    expect(bits('model.layers.0.mlp.gate_proj.weight')).toBe(2);
    expect(bits('lm_head.weight')).toBe(4);
    expect(plan.layers.find((l) => l.name === 'lm_head.weight')!.reason).toBe('manual: layer_bit_widths exact name');
  });

  test('plan - calibration picks spatial and time-aware methods, or base with a note', () => {
    const lines = [
      JSON.stringify({ layer: 'model.layers.0.self_attn.q_proj.weight', channel_absmax: Array.from({ length: 64 }, (_, i) => 1 + i / 64) }),
      JSON.stringify({ layer: 'model.layers.0.self_attn.k_proj.weight', channel_absmax: [1, 2, 3] }),
      ...Array.from({ length: 25 }, (_, t) => JSON.stringify({ layer: 'model.layers.1.mlp.up_proj.weight', timestep: t * 40, min: -1 - t / 10, max: 2 + t / 10 })),
    ];
    const calPath = join(dir, 'cal.jsonl');
    writeFileSync(calPath, lines.join('\n') + '\n');
    const cal = loadCalibration(calPath);
    const cfg = resolveConfig({ enable_spatial: true, enable_time_aware: true, num_time_groups: 10 });
    const plan = buildPlan(openModel(BF16), cfg, cal);
    const q = plan.layers.find((l) => l.name === 'model.layers.0.self_attn.q_proj.weight')!;
    expect([q.method, q.bytesOut]).toEqual(['spatial', 2304 + 64 * 4]);
    const k = plan.layers.find((l) => l.name === 'model.layers.0.self_attn.k_proj.weight')!;
    expect(k.method).toBe('base');
    expect(k.notes.join()).toMatch(/channel_absmax has 3 entries but the layer has 64 input channels/);
    const up = plan.layers.find((l) => l.name === 'model.layers.1.mlp.up_proj.weight')!;
    expect([up.method, up.timeGroups, up.bytesOut]).toEqual(['time_aware', 10, 6192 + 160]);
    const groups = timeGroupParams(cal.get(up.name)!, 10, 8);
    expect(groups.length).toBe(10);
    expect(groups[0]).toMatchObject({ t_start: 0, t_end: 40 });
    expect(groups.at(-1)!.t_end).toBe(960);
    expect(groups[0]!.scale).toBe(Math.fround((2.1 + 1.1) / 255));
    expect(groups[0]!.zero_point).toBe(Math.round(1.1 / groups[0]!.scale));
    const s = equalizationScales(new Float32Array([4, 0, 1]), new Float32Array([1, 0, 0]), 0.5);
    expect(Array.from(s)).toEqual([2, 1, 1e5].map(Math.fround));
  });

  test('plan - a malformed calibration file names the line', () => {
    const p = join(dir, 'bad.jsonl');
    writeFileSync(p, '{"layer":"a","timestep":1,"min":0,"max":1}\n{"layer":"a","timestep":1,"min":2}\n');
    expect(() => loadCalibration(p)).toThrow(CalibrationError);
    expect(() => loadCalibration(p)).toThrow(/bad\.jsonl:2: bad field "max"/);
    writeFileSync(p, '{"layer":"a","channel_absmax":[1],"extra":2}\n');
    expect(() => loadCalibration(p)).toThrow(/bad\.jsonl:1: unknown field "extra"/);
    writeFileSync(p, '{"layer":"a","timestep":1,"min":3,"max":1}\n');
    expect(() => loadCalibration(p)).toThrow(/min 3 is greater than max 1/);
  });

  test('plan - block numbers and modality from names', () => {
    expect(blockNumber('model.layers.17.mlp.up_proj.weight')).toBe(17);
    expect(blockNumber('transformer.h.3.attn.c_attn.weight')).toBe(3);
    expect(blockNumber('down_blocks.1.resnets.0.conv1.weight')).toBe(1);
    expect(blockNumber('lm_head.weight')).toBeNull();
    expect(detectModality({}, ['conv_in.weight', 'down_blocks.0.resnets.0.conv1.weight', 'mid_block.attentions.0.proj.weight'])).toBe('image');
    expect(detectModality({}, ['encoder.mel_filters', 'vocoder.conv.weight'])).toBe('audio');
    expect(detectModality({ modality: 'code' }, ['model.layers.0.mlp.up_proj.weight'])).toBe('code');
    expect(detectModality({ architecture: 'DiT-audio' }, [])).toBe('audio');
    expect(detectModality({}, ['foo.weight'])).toBeNull();
  });
});
