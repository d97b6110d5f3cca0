// Malformed and hostile safetensors models in local mode: each is refused with a named
// ModelFormatError and exit 2, never a stack trace or an out-of-memory, and leaves no file.
import { copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { main } from '../cli/main.js';
import type { CommandIO } from '../cli/commands/io.js';
import { ModelFormatError } from '../core/errors.js';
import { openModel } from '../core/model/model-source.js';
import { FIXTURE_MODELS } from './helpers/cli.js';
import { tempDir } from './helpers/models.js';

const { dir, cleanup } = tempDir('aq-malformed-');
afterAll(cleanup);
const BF16 = join(FIXTURE_MODELS, 'stories260K-bf16.safetensors');

/** A safetensors file from header text (not necessarily what JSON.stringify would write). */
function rawModel(name: string, headerText: string, data = Buffer.alloc(0)): string {
  const header = Buffer.from(headerText);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(header.length));
  const path = join(dir, name);
  writeFileSync(path, Buffer.concat([len, header, data]));
  return path;
}

function modelError(path: string): ModelFormatError {
  try {
    openModel(path);
  } catch (e) {
    expect(e).toBeInstanceOf(ModelFormatError);
    return e as ModelFormatError;
  }
  throw new Error(`${path} opened without an error`);
}

async function cli(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const io: CommandIO = { out: (t) => void (stdout += t), err: (t) => void (stderr += t), env: {}, isTTY: false };
  const code = await main(argv, io);
  return { code, stdout, stderr };
}

/** quantize exits 2 with `message`, prints no stack trace and leaves no file beside the output. */
async function quantizeRefuses(model: string, message: RegExp): Promise<void> {
  const out = join(dir, 'out', 'x.arrow');
  mkdirSync(join(dir, 'out'), { recursive: true });
  const r = await cli(['quantize', model, '-o', out]);
  expect(r.code).toBe(2);
  expect(r.stderr).toMatch(message);
  expect(r.stderr).not.toMatch(/internal error|\n\s+at /);
  expect(readdirSync(join(dir, 'out'))).toEqual([]);
}

describe('malformed models', () => {
  test('malformed models - a text file is not a safetensors file', async () => {
    const path = join(dir, 'notes.safetensors');
    writeFileSync(path, 'these are my notes, not a model\n');
    expect(modelError(path).message).toMatch(/^not a safetensors file: notes\.safetensors \(it starts with "these are"/);
    await quantizeRefuses(path, /not a safetensors file: notes\.safetensors/);
  });

  test('malformed models - an empty tensor with dimension 2^53−1 is refused before anything is sized', async () => {
    const path = rawModel('huge53.safetensors', '{"w":{"dtype":"F32","shape":[9007199254740991,0],"data_offsets":[0,0]}}');
    const e = modelError(path);
    expect(e.tensor).toBe('w');
    expect(e.message).toBe('huge53.safetensors: tensor "w": shape [9007199254740991,0] has no elements; ArrowQuant does not take empty tensors');
    await quantizeRefuses(path, /tensor "w": shape \[9007199254740991,0\] has no elements/);
  });

  test('malformed models - an empty tensor with dimension 2^30 is refused before anything is sized', async () => {
    const path = rawModel('huge30.safetensors', '{"w":{"dtype":"BF16","shape":[1073741824,0],"data_offsets":[0,0]}}');
    expect(modelError(path).message).toMatch(/tensor "w": shape \[1073741824,0\] has no elements; ArrowQuant does not take empty tensors/);
    await quantizeRefuses(path, /shape \[1073741824,0\] has no elements/);
  });

  test('malformed models - deeply nested __metadata__ is refused without recursion', async () => {
    const depth = 200_000;
    const path = rawModel('deep.safetensors', `{"__metadata__":{"a":${'['.repeat(depth)}${']'.repeat(depth)}},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, Buffer.alloc(4));
    expect(modelError(path).message).toBe(`deep.safetensors: header nests JSON ${depth + 2} levels deep; a safetensors header has at most 3`);
    await quantizeRefuses(path, /header nests JSON 200002 levels deep/);
  });

  test('malformed models - a non-string __metadata__ value is refused (the spec says string to string)', () => {
    const path = rawModel('meta.safetensors', '{"__metadata__":{"format":{"x":1}},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', Buffer.alloc(4));
    expect(modelError(path).message).toBe('meta.safetensors: "__metadata__"."format" must be a string, got an object');
  });

  test('malformed models - 130,000 tensors plan without a stack overflow', async () => {
    const n = 130_000;
    const entries = Array.from({ length: n }, (_, i) => `"model.layers.${i}.mlp.w":{"dtype":"F32","shape":[1],"data_offsets":[${4 * i},${4 * i + 4}]}`);
    const path = rawModel('many.safetensors', `{${entries.join(',')}}`, Buffer.alloc(4 * n));
    // mixed precision with a target: the allocation and the table both see every tensor
    const r = await cli(['plan', path, '--mixed-precision', '--target-size-mb', '10', '--json']);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/130000 layers/);
    const plan = JSON.parse(r.stdout);
    expect(plan.layers.length).toBe(n);
    expect(plan.layers[n - 1].name).toBe(`model.layers.${n - 1}.mlp.w`);
    expect(plan.target_met).toBe(true);
  }, 60_000);

  test('malformed models - an index with an empty weight_map beside a real shard has no tensors', async () => {
    const sharded = join(dir, 'empty-index');
    mkdirSync(sharded);
    copyFileSync(BF16, join(sharded, 'model-00001-of-00001.safetensors'));
    writeFileSync(join(sharded, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: {} }));
    expect(modelError(sharded).message).toMatch(/empty-index: no tensors \(model\.safetensors\.index\.json has an empty weight_map\); there is nothing to quantize$/);
    await quantizeRefuses(sharded, /no tensors \(model\.safetensors\.index\.json has an empty weight_map\)/);
  });

  test('malformed models - a header {} has no tensors', async () => {
    const path = rawModel('empty.safetensors', '{}');
    expect(modelError(path).message).toMatch(/empty\.safetensors: no tensors \(its header lists no tensor\); there is nothing to quantize$/);
    await quantizeRefuses(path, /no tensors/);
    expect((await cli(['plan', path])).code).toBe(2);
  });
});

describe('output guard', () => {
  test('output guard - quantize refuses to write over the input model or one of its shards', async () => {
    const model = join(dir, 'mine.safetensors');
    copyFileSync(BF16, model);
    const before = readFileSync(model);
    const r = await cli(['quantize', model, '-o', model]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/output .*mine\.safetensors is the input model; writing it would destroy the source/);
    expect(readFileSync(model).equals(before)).toBe(true);
    // the same file by another spelling
    const again = await cli(['quantize', model, '-o', join(dir, 'out', '..', 'mine.safetensors')]);
    expect(again.code).toBe(2);
    const sharded = join(FIXTURE_MODELS, 'stories260K-sharded');
    const shard = readdirSync(sharded).find((f) => f.endsWith('.safetensors'))!;
    const s = await cli(['quantize', sharded, '-o', join(sharded, shard)]);
    expect(s.code).toBe(2);
    expect(s.stderr).toMatch(new RegExp(`is part of the input model \\(${shard.replace(/\./g, '\\.')}\\)`));
    const idx = await cli(['quantize', sharded, '-o', join(sharded, 'model.safetensors.index.json')]);
    expect(idx.stderr).toMatch(/part of the input model \(model\.safetensors\.index\.json\)/);
  });

  test('output guard - dequantize refuses to write over its input file', async () => {
    mkdirSync(join(dir, 'deq'), { recursive: true });
    const arrow = join(dir, 'deq', 'deq.arrow');
    expect((await cli(['quantize', BF16, '-o', arrow])).code).toBe(0);
    const before = readFileSync(arrow);
    const r = await cli(['dequantize', arrow, '-o', arrow]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/output .*deq\.arrow is the input file .*deq\.arrow; writing it would destroy the input/);
    expect(readFileSync(arrow).equals(before)).toBe(true);
  });

  test('output guard - a missing output directory is bad usage (exit 2)', async () => {
    const r = await cli(['quantize', BF16, '-o', join(dir, 'no', 'such', 'x.arrow')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/directory .*no\/such does not exist \(create it first\)/);
  });
});
