import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { availableParallelism } from 'node:os';
import { selectKernel } from '../native/kernels.js';
import { afterAll, describe, expect, test } from 'vitest';
import { fillHeavyTailed, seededRandom } from '../core/model/random.js';
import { FIXTURE_MODELS, runCli } from './helpers/cli.js';
import { tempDir, writeModel } from './helpers/models.js';

const { dir, cleanup } = tempDir('aq-cliq-');
afterAll(cleanup);
const BF16 = join(FIXTURE_MODELS, 'stories260K-bf16.safetensors');

describe('cli quantize', () => {
  test('cli quantize - quantize, inspect, verify and dequantize the real model', async () => {
    const out = join(dir, 'x.arrow');
    const q = await runCli(['quantize', BF16, '-o', out, '--json']);
    expect(q.code).toBe(0);
    const s = JSON.parse(q.stdout);
    expect(s).toMatchObject({ output: out, layers: 48, bytes_in: 585600, layers_per_bit_width: { 4: 48 } });
    expect(s.weighted_sqnr_db).toBeGreaterThanOrEqual(19);
    // the kernel and thread count this machine runs, as --version reports them
    expect(s.kernel).toBe(selectKernel(process.env).kernel.variant);
    expect(s.threads).toBe(availableParallelism());
    expect(s.job_id).toMatch(/^[0-9a-f]{24}$/);
    expect(s.compression_ratio).toBe(Number((585600 / s.bytes_out).toFixed(4)));
    expect(s.warnings).toEqual([]);
    const version = await runCli(['--version']);
    expect(version.stdout).toContain(`kernel: ${s.kernel} `);
    expect(q.stderr).toMatch(/wrote .*x\.arrow/);
    expect(q.stderr).not.toMatch(/\r\[/); // no progress bar when stderr is not a terminal
    const i = await runCli(['inspect', out, '--json']);
    expect(i.code).toBe(0);
    expect(JSON.parse(i.stdout).layers.length).toBe(48);
    expect(i.stderr).toMatch(/name\s+type\s+bits\s+method\s+group\s+bytes\s+SQNR dB\s+cosine\s+notes/);
    const v = await runCli(['verify', out, '--against', join(FIXTURE_MODELS, 'stories260K-sharded')]);
    expect(v.code).toBe(0);
    expect(v.stderr).toMatch(/48 layers checked, 0 with problems/);
    const d = await runCli(['dequantize', out, '-o', join(dir, 'back.safetensors'), '--dtype', 'bf16']);
    expect(d.code).toBe(0);
    const p = await runCli(['plan', join(dir, 'back.safetensors'), '--json']);
    expect(JSON.parse(p.stdout).total_bytes_in).toBe(585600);
    const bad = await runCli(['dequantize', out, '-o', join(dir, 'b2.safetensors'), '--dtype', 'int3']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/option '--dtype <dtype>' argument 'int3' is invalid\. Allowed choices are f32, f16, bf16/);
  });

  test('cli quantize - bad input exits 2 and leaves no file; a broken bar exits 3; a mismatch exits 1', async () => {
    const w = fillHeavyTailed(new Float32Array(256), seededRandom(4), 0.1);
    w[17] = Infinity;
    const model = await writeModel(join(dir, 'inf.safetensors'), [{ name: 'layers.3.mlp.weight', shape: [16, 16], values: w }], 'F32');
    const out = join(dir, 'inf.arrow');
    const r = await runCli(['quantize', model, '-o', out]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/layer "layers\.3\.mlp\.weight": element 17 is Infinity/);
    expect(existsSync(out)).toBe(false);
    const ff = await runCli(['quantize', BF16, '-o', join(dir, 'ff.arrow'), '--bits', '2', '--fail-fast', '-c', writeCfg('min_layer_cosine: {2: 0.96}\n')]);
    expect(ff.code).toBe(3);
    expect(ff.stderr).toMatch(/cosine 0\.\d{4} at 2 bits is below min_layer_cosine 0\.96 \(fail_fast\)/);
    expect(existsSync(join(dir, 'ff.arrow'))).toBe(false);
    const miss = await runCli(['quantize', BF16]);
    expect(miss.code).toBe(2);
    expect(miss.stderr).toMatch(/required option '-o, --output <file>' not specified/);
    const good = join(dir, 'good.arrow');
    expect((await runCli(['quantize', BF16, '-o', good])).code).toBe(0);
    const mismatch = await runCli(['verify', good, '--against', model]);
    expect(mismatch.code).toBe(1);
    expect(mismatch.stderr).toMatch(/the file has 48 layers, the model 1 tensors/);
    writeFileSync(join(dir, 'notarrow.arrow'), 'hello world, not arrow');
    const ins = await runCli(['inspect', join(dir, 'notarrow.arrow')]);
    expect(ins.code).toBe(2);
    expect(ins.stderr).toMatch(/is not an Arrow IPC file/);
    expect(readFileSync(good).subarray(0, 6).toString()).toBe('ARROW1');
  });
});

function writeCfg(text: string): string {
  const p = join(dir, `cfg-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(p, text);
  return p;
}
