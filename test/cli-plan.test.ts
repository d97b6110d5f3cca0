import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { FIXTURE_MODELS, runCli } from './helpers/cli.js';

const BF16 = join(FIXTURE_MODELS, 'stories260K-bf16.safetensors');
const dir = mkdtempSync(join(tmpdir(), 'aq-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('cli plan', () => {
  test('cli plan - 0.22 MB target: exit 0, JSON on stdout, table on stderr', async () => {
    const r = await runCli(['plan', BF16, '--mixed-precision', '--target-size-mb', '0.22', '--json']);
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(doc.total_bytes_out).toBe(217760);
    expect(doc.total_bytes_out).toBeLessThanOrEqual(220000);
    expect(doc.target_bytes).toBe(220000);
    expect(doc.target_met).toBe(true);
    expect(Object.keys(doc.layers[0])).toEqual(expect.arrayContaining(['name', 'shape', 'dtype', 'bits', 'method', 'group_size', 'bytes_in', 'bytes_out', 'reason']));
    expect(doc.layers.find((l: { name: string }) => l.name === 'model.layers.0.self_attn.q_proj.weight').bits).toBe(4);
    expect(r.stderr).toMatch(/name\s+shape\s+dtype\s+bits\s+method\s+group\s+bytes in\s+bytes out\s+why/);
    expect(r.stderr).toMatch(/bytes out 217760 .*target 220000 bytes .*: met/);
  });

  test('cli plan - 0.15 MB target exits 2 naming the smallest reachable size', async () => {
    const r = await runCli(['plan', BF16, '--mixed-precision', '--target-size-mb', '0.15', '--json']);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/smallest reachable size is 202400 bytes/);
  });

  test('cli plan - YAML with an unknown key or bit_width 3 exits 2 naming key and allowed values', async () => {
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'bit_width: 3\n');
    const r = await runCli(['plan', BF16, '-c', bad]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/bad\.yaml: bit_width: 3 is not allowed; allowed: 2, 4, 8/);
    const unknown = join(dir, 'unknown.yaml');
    writeFileSync(unknown, 'enable_mixed_precision: true\ntarget_size: 3\n');
    const u = await runCli(['plan', BF16, '-c', unknown]);
    expect(u.code).toBe(2);
    expect(u.stderr).toMatch(/unknown\.yaml: unknown key "target_size"; allowed keys: bit_width, group_size/);
  });

  test('cli plan - environment and option errors exit 2; bad model files exit 2', async () => {
    const env = await runCli(['plan', BF16], { env: { ARROW_QUANT_NUM_THREADS: '-1' } });
    expect(env.code).toBe(2);
    expect(env.stderr).toMatch(/environment variable ARROW_QUANT_NUM_THREADS: num_threads: -1 is not allowed; allowed: an integer ≥ 0/);
    const opt = await runCli(['plan', BF16, '--bogus']);
    expect(opt.code).toBe(2);
    expect(opt.stderr).toMatch(/unknown option '--bogus'/);
    const truncated = join(dir, 'trunc.safetensors');
    writeFileSync(truncated, Buffer.from([200, 0, 0, 0, 0, 0, 0, 0, 123]));
    const t = await runCli(['plan', truncated]);
    expect(t.code).toBe(2);
    expect(t.stderr).toMatch(/trunc\.safetensors: header length 200 goes beyond the end of the file \(9 bytes\)/);
    const missing = await runCli(['plan', join(dir, 'nope.safetensors')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/model not found/);
  });

  test('cli plan - sample-model writes a model that plans, single and sharded alike', async () => {
    const single = join(dir, 'sample.safetensors');
    const sharded = join(dir, 'sample-sharded');
    expect((await runCli(['sample-model', single, '--layers', '2'])).code).toBe(0);
    expect((await runCli(['sample-model', sharded, '--layers', '2', '--shards', '3'])).code).toBe(0);
    const a = JSON.parse((await runCli(['plan', single, '--mixed-precision', '--json'])).stdout);
    const b = JSON.parse((await runCli(['plan', sharded, '--mixed-precision', '--json'])).stdout);
    expect(a.layers.length).toBe(2 * 9 + 3);
    expect(b.layers).toEqual(a.layers);
  });

  test('cli plan - --help and --version', async () => {
    const h = await runCli(['plan', '--help']);
    expect(h.code).toBe(0);
    expect(h.stdout).toMatch(/--target-size-mb <mb>\s+budget for bytes_out/);
    const v = await runCli(['--version']);
    expect(v.stdout).toMatch(/^arrowquant \d+\.\d+\.\d+/);
  });
});
