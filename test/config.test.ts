import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { DiffusionQuantConfig } from '../core/config/diffusion-quant-config.js';
import { configToYaml, envOverrides, parseConfigYaml, resolveConfig } from '../core/config/load.js';
import { CONFIG_KEYS, DEFAULTS, PROFILES } from '../core/config/schema.js';
import { cliOverrides } from '../cli/options.js';
import { ConfigError, InfeasibleTargetError } from '../core/errors.js';

const names = (...n: string[]) => n;
const sizes = (ns: string[], size: number) => new Map(ns.map((n) => [n, size]));

// The seed's fifteen tests, by behaviour.
describe('mixed precision (seed)', () => {
  test('mixed precision - disabled by default', () => {
    const c = new DiffusionQuantConfig();
    expect(c.enable_mixed_precision).toBe(false);
    expect(c.layer_bit_widths).toEqual({});
    expect(c.target_model_size_mb).toBeNull();
  });

  test('mixed precision - setLayerBitWidth records widths', () => {
    const c = new DiffusionQuantConfig({ enable_mixed_precision: true });
    c.setLayerBitWidth('model.embed_tokens.weight', 16);
    c.setLayerBitWidth('model.layers.0.self_attn.q_proj.weight', 4);
    c.setLayerBitWidth('model.layers.0.mlp.gate_proj.weight', 2);
    expect(c.layer_bit_widths).toEqual({
      'model.embed_tokens.weight': 16,
      'model.layers.0.self_attn.q_proj.weight': 4,
      'model.layers.0.mlp.gate_proj.weight': 2,
    });
  });

  test('mixed precision - getLayerBitWidth with it disabled returns bit_width', () => {
    const c = new DiffusionQuantConfig({ bit_width: 4 });
    c.layer_bit_widths['model.embed_tokens.weight'] = 16;
    expect(c.getLayerBitWidth('model.embed_tokens.weight')).toBe(4);
    expect(c.getLayerBitWidth('model.layers.0.weight')).toBe(4);
  });

  test('mixed precision - getLayerBitWidth with it enabled', () => {
    const c = new DiffusionQuantConfig({ bit_width: 2, enable_mixed_precision: true });
    c.setLayerBitWidth('model.embed_tokens.weight', 16);
    c.setLayerBitWidth('model.layers.0.self_attn.q_proj.weight', 4);
    expect(c.getLayerBitWidth('model.embed_tokens.weight')).toBe(16);
    expect(c.getLayerBitWidth('model.layers.0.self_attn.q_proj.weight')).toBe(4);
    expect(c.getLayerBitWidth('model.layers.0.mlp.gate_proj.weight')).toBe(2);
  });

  test('mixed precision - all widths 2/4/8/16', () => {
    const c = new DiffusionQuantConfig({ enable_mixed_precision: true });
    for (const b of [2, 4, 8, 16] as const) c.setLayerBitWidth(`layer_${b}`, b);
    expect([2, 4, 8, 16].map((b) => c.getLayerBitWidth(`layer_${b}`))).toEqual([2, 4, 8, 16]);
    expect(() => c.setLayerBitWidth('x', 3 as never)).toThrow(ConfigError);
  });

  test('mixed precision - overwrite a width', () => {
    // a width the heuristic assigned is replaced, in place, and nothing else changes
    const c = new DiffusionQuantConfig({ bit_width: 2, enable_mixed_precision: true });
    const n = names('model.embed_tokens.weight', 'model.layers.0.self_attn.q_proj.weight');
    c.analyzeAndAssignBitWidths(n, sizes(n, 1 << 20));
    expect(c.layer_bit_widths).toEqual({ 'model.embed_tokens.weight': 16, 'model.layers.0.self_attn.q_proj.weight': 4 });
    c.setLayerBitWidth('model.embed_tokens.weight', 8);
    expect(c.layer_bit_widths).toEqual({ 'model.embed_tokens.weight': 8, 'model.layers.0.self_attn.q_proj.weight': 4 });
    expect(c.getLayerBitWidth('model.embed_tokens.weight')).toBe(8);
    // an exact entry overrides a pattern that also matches; the pattern still holds for the rest
    c.setLayerBitWidth('re:model\\.layers\\..*', 2);
    c.setLayerBitWidth('model.layers.0.self_attn.q_proj.weight', 8);
    expect(c.getLayerBitWidth('model.layers.0.self_attn.q_proj.weight')).toBe(8);
    expect(c.getLayerBitWidth('model.layers.1.mlp.up_proj.weight')).toBe(2);
    // and the overwritten width is what gets saved
    expect(DiffusionQuantConfig.fromYaml(c.toYaml()).layer_bit_widths['model.embed_tokens.weight']).toBe(8);
  });

  test('mixed precision - analyze gives sensitive layers 16', () => {
    const c = new DiffusionQuantConfig({ bit_width: 2, enable_mixed_precision: true });
    const n = names('model.embed_tokens.weight', 'model.norm.weight', 'lm_head.weight', 'model.layers.0.self_attn.q_proj.weight');
    c.analyzeAndAssignBitWidths(n, sizes(n, 1 << 20));
    expect(n.map((x) => c.getLayerBitWidth(x))).toEqual([16, 16, 16, 4]);
  });

  test('mixed precision - analyze gives attention 4 and early MLP 4', () => {
    const c = new DiffusionQuantConfig({ bit_width: 2, enable_mixed_precision: true });
    const n = ['q', 'k', 'v', 'o'].map((p) => `model.layers.0.self_attn.${p}_proj.weight`).concat('model.layers.0.mlp.gate_proj.weight');
    c.analyzeAndAssignBitWidths(n, sizes(n, 1 << 20));
    expect(n.map((x) => c.getLayerBitWidth(x))).toEqual([4, 4, 4, 4, 4]);
  });

  test('mixed precision - analyze follows the depth rule', () => {
    const c = new DiffusionQuantConfig({ bit_width: 2, enable_mixed_precision: true });
    const n = Array.from({ length: 12 }, (_, i) => `model.layers.${i}.mlp.gate_proj.weight`);
    c.analyzeAndAssignBitWidths(n, sizes(n, 1 << 20));
    expect(n.map((x) => c.getLayerBitWidth(x))).toEqual([4, 4, 4, 2, 2, 2, 2, 2, 2, 4, 4, 4]);
  });

  test('mixed precision - analyze meets a target size and never lowers a 16-bit layer', () => {
    const c = new DiffusionQuantConfig({ bit_width: 4, enable_mixed_precision: true, target_model_size_mb: 55 });
    const n = ['model.embed_tokens.weight', ...Array.from({ length: 10 }, (_, i) => `model.layers.${i}.mlp.gate_proj.weight`)];
    const r = c.analyzeAndAssignBitWidths(n, sizes(n, 10 * 1024 * 1024))!;
    const widths = n.map((x) => c.getLayerBitWidth(x));
    expect(widths[0]).toBe(16);
    expect(widths.filter((b) => b === 2).length).toBeGreaterThan(0);
    expect(widths.filter((b) => b === 4).length).toBeGreaterThan(0);
    expect(r.targetMet).toBe(true);
    expect(r.bytesOut).toBeLessThanOrEqual(55e6);
    // the heuristic alone (3 early + 2 late at 4, 5 middle at 2) would be over budget
    const untouched = new DiffusionQuantConfig({ enable_mixed_precision: true });
    expect(untouched.analyzeAndAssignBitWidths(n, sizes(n, 10 * 1024 * 1024))!.bytesOut).toBeGreaterThan(55e6);
  });

  test('mixed precision - skip_sensitive_layers keeps sensitive layers as floats', () => {
    const c = new DiffusionQuantConfig({ bit_width: 2, enable_mixed_precision: false, skip_sensitive_layers: true });
    const n = names('model.embed_tokens.weight', 'model.norm.weight', 'lm_head.weight', 'model.layers.0.mlp.gate_proj.weight');
    const r = c.analyzeAndAssignBitWidths(n, sizes(n, 1 << 20));
    expect(r).toBeNull(); // analysis needs mixed precision …
    c.enable_mixed_precision = true;
    const r2 = c.analyzeAndAssignBitWidths(n, sizes(n, 1 << 20))!;
    expect(r2.allocations.map((a) => a.sensitive)).toEqual([true, true, true, false]);
    expect(n.map((x) => c.getLayerBitWidth(x))).toEqual([16, 16, 16, 4]);
  });

  test('mixed precision - YAML round trip keeps every field', () => {
    const c = new DiffusionQuantConfig({ enable_mixed_precision: true, bit_width: 2, target_model_size_mb: 100 });
    c.setLayerBitWidth('model.embed_tokens.weight', 16);
    c.setLayerBitWidth('model.layers.0.self_attn.q_proj.weight', 4);
    const back = DiffusionQuantConfig.fromYaml(c.toYaml());
    expect(back.toJSON()).toEqual(c.toJSON());
    expect(back.layer_bit_widths['model.embed_tokens.weight']).toBe(16);
    expect(back.target_model_size_mb).toBe(100);
    // every key, non-default values
    const full = resolveConfig({
      bit_width: 8, group_size: 32, deployment_profile: 'cloud', enable_mixed_precision: true,
      layer_bit_widths: { 're:.*mlp.*': 2, 'model.*.q_proj.weight': 8, exact: 16 }, target_model_size_mb: 12.5,
      allocation_strategy: 'measured', skip_sensitive_layers: true, sensitive_layer_names: ['a'], sensitive_layer_patterns: ['^b.*'],
      min_layer_cosine: { 2: 0.5, 4: 0.8, 8: 0.99 }, min_accuracy: 0.7, fail_fast: true, refine: 'search', enable_spatial: true,
      smooth_alpha: 0.25, enable_time_aware: true, num_time_groups: 7, act_bit_width: 4, calibration_path: 'cal.jsonl',
      modality: 'image', num_threads: 3,
    });
    expect(resolveConfig(parseConfigYaml(configToYaml(full), 'round-trip'))).toEqual(full);
  });

  test('mixed precision - analyze is a no-op when disabled', () => {
    const c = new DiffusionQuantConfig({ bit_width: 4 });
    const n = names('model.embed_tokens.weight', 'model.layers.0.self_attn.q_proj.weight');
    c.analyzeAndAssignBitWidths(n, sizes(n, 1 << 20));
    expect(c.layer_bit_widths).toEqual({});
    expect(n.map((x) => c.getLayerBitWidth(x))).toEqual([4, 4]);
  });

  test('mixed precision - a real-world Llama 7B layout', () => {
    const h = 4096;
    const ffn = 11008;
    const shapes = new Map<string, number[]>([
      ['model.embed_tokens.weight', [32000, h]],
    ]);
    for (let i = 0; i < 32; i++) {
      const p = `model.layers.${i}`;
      for (const s of ['q', 'k', 'v', 'o']) shapes.set(`${p}.self_attn.${s}_proj.weight`, [h, h]);
      shapes.set(`${p}.mlp.gate_proj.weight`, [ffn, h]);
      shapes.set(`${p}.mlp.up_proj.weight`, [ffn, h]);
      shapes.set(`${p}.mlp.down_proj.weight`, [h, ffn]);
      shapes.set(`${p}.input_layernorm.weight`, [h]);
      shapes.set(`${p}.post_attention_layernorm.weight`, [h]);
    }
    shapes.set('model.norm.weight', [h]);
    shapes.set('lm_head.weight', [32000, h]);
    const n = [...shapes.keys()];
    expect(n.length).toBe(291);
    const c = new DiffusionQuantConfig({ bit_width: 2, enable_mixed_precision: true });
    const free = c.analyzeAndAssignBitWidths(n, shapes)!;
    const count = (b: number) => free.allocations.filter((a) => a.bits === b).length;
    expect([count(16), count(4), count(2)]).toEqual([67, 128 + 16 * 3, 16 * 3]);
    expect(c.getLayerBitWidth('model.layers.0.mlp.gate_proj.weight')).toBe(4);
    expect(c.getLayerBitWidth('model.layers.16.mlp.gate_proj.weight')).toBe(2);
    expect(c.getLayerBitWidth('model.layers.31.mlp.gate_proj.weight')).toBe(4);
    expect(c.getLayerBitWidth('model.layers.15.self_attn.k_proj.weight')).toBe(4);
    expect(c.getLayerBitWidth('model.layers.0.post_attention_layernorm.weight')).toBe(16);

    // with a target 300 MB below the heuristic's size: met, only 4→2 moves, floats untouched
    const target = Math.floor(free.bytesOut / 1e6) - 300;
    const t = new DiffusionQuantConfig({ enable_mixed_precision: true, target_model_size_mb: target });
    const r = t.analyzeAndAssignBitWidths(n, shapes)!;
    expect(r.targetMet).toBe(true);
    expect(r.bytesOut).toBeLessThanOrEqual(target * 1e6);
    expect(r.allocations.filter((a) => a.bits === 16).length).toBe(67);
    expect(r.allocations.filter((a) => a.bits === 2).length).toBeGreaterThan(count(2));
    // the largest layers went first: the MLPs (45M params) before any 16M attention matrix
    expect(r.allocations.some((a, i) => a.bits === 2 && n[i]!.includes('self_attn'))).toBe(false);

    const tooSmall = new DiffusionQuantConfig({ enable_mixed_precision: true, target_model_size_mb: 100 });
    expect(() => tooSmall.analyzeAndAssignBitWidths(n, shapes)).toThrow(InfeasibleTargetError);
  });

  test('mixed precision - an empty layer name', () => {
    const c = new DiffusionQuantConfig({ bit_width: 4, enable_mixed_precision: true });
    expect(c.getLayerBitWidth('')).toBe(4);
    c.setLayerBitWidth('', 8);
    expect(c.getLayerBitWidth('')).toBe(8);
  });
});

describe('config', () => {
  test('config - patterns: exact name first, then the first matching pattern', () => {
    const c = new DiffusionQuantConfig({
      enable_mixed_precision: true,
      bit_width: 8,
      layer_bit_widths: { 're:.*mlp.*': 2, 'model.layers.*.mlp.up_proj.weight': 4, 'model.layers.1.mlp.up_proj.weight': 16 },
    });
    expect(c.getLayerBitWidth('model.layers.0.mlp.up_proj.weight')).toBe(2);
    expect(c.getLayerBitWidth('model.layers.1.mlp.up_proj.weight')).toBe(16);
    expect(c.getLayerBitWidth('model.layers.0.self_attn.q_proj.weight')).toBe(8);
    const glob = new DiffusionQuantConfig({ enable_mixed_precision: true, layer_bit_widths: { 'model.layers.*.mlp.up_proj.weight': 4 } });
    expect(glob.getLayerBitWidth('model.layers.7.mlp.up_proj.weight')).toBe(4);
    expect(glob.getLayerBitWidth('xmodel.layers.7.mlp.up_proj.weight')).toBe(glob.bit_width);
  });

  test('config - profiles set the four preset keys, explicit values win', () => {
    for (const [name, p] of Object.entries(PROFILES)) {
      const c = resolveConfig({ deployment_profile: name as keyof typeof PROFILES });
      expect([c.bit_width, c.group_size, c.num_time_groups, c.min_accuracy]).toEqual([p.bit_width, p.group_size, p.num_time_groups, p.min_accuracy]);
    }
    expect(resolveConfig({ deployment_profile: 'edge' }, { bit_width: 8 }).bit_width).toBe(8);
    expect(resolveConfig({}).bit_width).toBe(DEFAULTS.bit_width);
  });

  test('config - precedence: file < environment < command line', () => {
    const file = parseConfigYaml('bit_width: 2\ngroup_size: 64\nlayer_bit_widths:\n  a: 4\n', 'cfg.yaml');
    const env = envOverrides({ ARROW_QUANT_BIT_WIDTH: '8', ARROW_QUANT_FAIL_FAST: 'true', ARROW_QUANT_TARGET_MODEL_SIZE_MB: '1.5', ARROW_QUANT_NUM_THREADS: '2' });
    const cli = cliOverrides({ 'group-size': '256', layer: ['b=16'], 'mixed-precision': true });
    const c = resolveConfig(file, env, cli);
    expect(c.bit_width).toBe(8);
    expect(c.group_size).toBe(256);
    expect(c.fail_fast).toBe(true);
    expect(c.target_model_size_mb).toBe(1.5);
    expect(c.num_threads).toBe(2);
    expect(c.enable_mixed_precision).toBe(true);
    expect(c.layer_bit_widths).toEqual({ a: 4, b: 16 });
    const all = envOverrides({ ARROW_QUANT_GROUP_SIZE: '32', ARROW_QUANT_NUM_TIME_GROUPS: '3', ARROW_QUANT_MIN_ACCURACY: '0.5' });
    expect(all).toEqual({ group_size: 32, num_time_groups: 3, min_accuracy: 0.5 });
  });

  test('config - an unknown key names the key and the allowed keys', () => {
    expect(() => parseConfigYaml('bit_widht: 4\n', 'cfg.yaml')).toThrow(ConfigError);
    expect(() => parseConfigYaml('bit_widht: 4\n', 'cfg.yaml')).toThrow(/cfg\.yaml: unknown key "bit_widht" \(did you mean "bit_width"\?\); allowed keys: bit_width, group_size/);
    expect(() => parseConfigYaml('min_layer_cosine:\n  3: 0.5\n', 'cfg.yaml')).toThrow(/min_layer_cosine: unknown key "3"/);
  });

  test('config - invalid values name the key and the allowed values', () => {
    const cases: [string, RegExp][] = [
      ['bit_width: 3', /cfg\.yaml: bit_width: 3 is not allowed; allowed: 2, 4, 8$/],
      ['group_size: 100', /group_size: 100 is not allowed; allowed: 32, 64, 128, 256/],
      ['smooth_alpha: 1.5', /smooth_alpha: 1\.5 is not allowed; allowed: a number in 0\.\.1/],
      ['num_time_groups: 0', /num_time_groups: 0 is not allowed; allowed: an integer in 1\.\.100/],
      ['refine: maybe', /refine: "maybe" is not allowed; allowed: none, search/],
      ['layer_bit_widths: {x: 3}', /layer_bit_widths\["x"\]: 3 is not allowed; allowed: 2, 4, 8, 16/],
      ['layer_bit_widths: {"re:(": 4}', /not a valid regular expression/],
      ['target_model_size_mb: -1', /target_model_size_mb: -1 is not allowed; allowed: a positive number or null/],
      ['fail_fast: "yes please"', /fail_fast: "yes please" is not allowed; allowed: true, false/],
      ['- 1\n- 2', /must be a mapping/],
      ['bit_width: [', /not valid YAML/],
    ];
    for (const [yaml, re] of cases) {
      let err: unknown;
      try {
        parseConfigYaml(yaml, 'cfg.yaml');
      } catch (e) {
        err = e;
      }
      expect(err, yaml).toBeInstanceOf(ConfigError);
      expect((err as Error).message, yaml).toMatch(re);
    }
    expect(() => envOverrides({ ARROW_QUANT_BIT_WIDTH: 'four' })).toThrow(/environment variable ARROW_QUANT_BIT_WIDTH: "four" is not allowed; allowed: 2, 4, 8/);
    expect(() => envOverrides({ ARROW_QUANT_FAIL_FAST: 'sure' })).toThrow(/ARROW_QUANT_FAIL_FAST: "sure" is not allowed; allowed: true, false/);
    expect(() => cliOverrides({ bits: '16' })).toThrow(/command line --bits: bit_width: 16 is not allowed; allowed: 2, 4, 8/);
  });
});

describe('config.example.yaml', () => {
  const text = readFileSync(join(__dirname, '..', 'config.example.yaml'), 'utf8');

  test('config.example.yaml - documents every key with its default', () => {
    const parsed = parseConfigYaml(text, 'config.example.yaml');
    expect(Object.keys(parsed).sort()).toEqual([...CONFIG_KEYS].sort());
    expect(resolveConfig(parsed)).toEqual(DEFAULTS);
  });

  test('config.example.yaml - the three examples are valid configurations', () => {
    const blocks = text.split(/^# Example \d+:.*$/m).slice(1);
    expect(blocks.length).toBe(3);
    const configs = blocks.map((b, i) => {
      const yaml = b.split('\n').filter((l) => /^# ([a-z_]+:|\s)/.test(l)).map((l) => l.slice(2)).join('\n');
      return resolveConfig(parseConfigYaml(yaml, `example ${i + 1}`));
    });
    expect(configs[0]!.layer_bit_widths['re:.*self_attn\\..*']).toBe(8);
    expect(configs[1]!.target_model_size_mb).toBe(3500);
    expect(configs[2]!.layer_bit_widths['model.layers.0.self_attn.q_proj.weight']).toBe(8);
    expect(configs[2]!.sensitive_layer_patterns).toEqual(['^model\\.layers\\.31\\.']);
  });
});
