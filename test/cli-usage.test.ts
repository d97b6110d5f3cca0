// The command-line parser (commander) in-process: usage errors exit 2 with a suggestion, help is
// generated from the options, values are rejected by value.
import { describe, expect, test } from 'vitest';
import { main } from '../cli/main.js';
import type { CommandIO } from '../cli/commands/io.js';
import { printable } from '../cli/printable.js';
import { FIXTURE_MODELS } from './helpers/cli.js';
import { tempDir, writeModel } from './helpers/models.js';
import { join } from 'node:path';

const BF16 = join(FIXTURE_MODELS, 'stories260K-bf16.safetensors');

async function run(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const io: CommandIO = { out: (t) => void (stdout += t), err: (t) => void (stderr += t), env: {}, isTTY: false };
  const code = await main(argv, io);
  return { code, stdout, stderr };
}

describe('cli usage', () => {
  test('cli usage - an option typo exits 2 and suggests the option', async () => {
    const r = await run(['quantize', BF16, '-o', '/tmp/never-written.arrow', '--bitz', '4']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/unknown option '--bitz'\n\(Did you mean --bits\?\)/);
    const p = await run(['plan', BF16, '--mixed-precison']);
    expect(p.code).toBe(2);
    expect(p.stderr).toMatch(/Did you mean --mixed-precision\?/);
  });

  test('cli usage - an unknown command exits 2 and suggests the command', async () => {
    const r = await run(['plna', BF16]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/unknown command 'plna'\n\(Did you mean plan\?\)/);
  });

  test('cli usage - negative numbers are parsed and rejected by value', async () => {
    const r = await run(['plan', BF16, '--threads', '-3']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--threads <n>' argument '-3' is invalid\. -3 is not allowed; allowed: an integer ≥ 0/);
    const w = await run(['worker', '--nats', 'nats://127.0.0.1:1', '--concurrency', '0']);
    expect(w.code).toBe(2);
    expect(w.stderr).toMatch(/--concurrency <n>' argument '0' is invalid\. 0 is not allowed; allowed: an integer ≥ 1/);
    const s = await run(['sample-model', '/tmp/never.safetensors', '--layers', '2.5']);
    expect(s.code).toBe(2);
    expect(s.stderr).toMatch(/2\.5 is not allowed; allowed: an integer ≥ 1/);
  });

  test('cli usage - enumerations are choices', async () => {
    const r = await run(['plan', BF16, '--bits', '3']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/argument '3' is invalid\. Allowed choices are 2, 4, 8\./);
    const s = await run(['plan', BF16, '--strategy', 'best']);
    expect(s.stderr).toMatch(/Allowed choices are heuristic, measured\./);
  });

  test('cli usage - missing arguments and required options exit 2', async () => {
    expect((await run(['plan'])).stderr).toMatch(/missing required argument 'model'/);
    const v = await run(['verify', 'x.arrow']);
    expect(v.code).toBe(2);
    expect(v.stderr).toMatch(/required option '--against <model>' not specified/);
    const extra = await run(['inspect', 'a.arrow', 'b.arrow']);
    expect(extra.code).toBe(2);
    expect(extra.stderr).toMatch(/too many arguments for 'inspect'/);
    const none = await run([]);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/Usage: arrowquant <command> \[options\]/);
  });

  test('cli usage - top-level help lists every command and the exit codes 0/1/2/3/130', async () => {
    const r = await run(['--help']);
    expect(r.code).toBe(0);
    for (const c of ['plan', 'quantize', 'worker', 'status', 'cancel', 'inspect', 'verify', 'dequantize', 'sample-model']) expect(r.stdout).toMatch(new RegExp(`^  ${c} `, 'm'));
    for (const c of ['0', '1', '2', '3', '130']) expect(r.stdout).toMatch(new RegExp(`^  ${c} +\\S`, 'm'));
    expect(r.stdout).toMatch(/docs\/format\.md/);
    expect(r.stdout).not.toMatch(/shared/);
    const h = await run(['help', 'verify']);
    expect(h.code).toBe(0);
    expect(h.stdout).toMatch(/--against <model>\s+the source model/);
  });

  test('cli usage - every command help is generated from its options and points to docs/', async () => {
    for (const c of ['plan', 'quantize', 'worker', 'status', 'cancel', 'inspect', 'verify', 'dequantize', 'sample-model']) {
      const r = await run([c, '--help']);
      expect(r.code, c).toBe(0);
      expect(r.stdout, c).toMatch(new RegExp(`^Usage: arrowquant ${c} `));
      expect(r.stdout, c).toMatch(/docs\//);
      expect(r.stdout, c).not.toMatch(/\.\.\/shared/);
    }
    const q = await run(['quantize', '--help']);
    expect(q.stdout).toMatch(/--listen <host:port>\s+where workers upload shards\s+\(default:\s+"0\.0\.0\.0:0"\)/);
    expect(q.stdout).toMatch(/--nats-creds <file>/);
    expect(q.stdout).toMatch(/--grpc-tls-client-ca <file>/);
  });
});

describe('cli messages', () => {
  test('cli messages - --layer with mixed precision off warns in quantize too, on stderr and in the JSON summary', async () => {
    const { dir, cleanup } = tempDir('aq-cli-warn-');
    try {
      const r = await run(['quantize', BF16, '-o', join(dir, 'w.arrow'), '--layer', 're:.*q_proj.*=8', '--json']);
      expect(r.code).toBe(0);
      const ignored = 'layer_bit_widths (re:.*q_proj.*) is ignored: enable_mixed_precision is off (add --mixed-precision)';
      expect(r.stderr).toContain(`warning: ${ignored}`);
      expect(JSON.parse(r.stdout).warnings).toEqual([ignored]);
      const p = await run(['plan', BF16, '--layer', 're:.*q_proj.*=8']);
      expect(p.stderr).toContain(`warning: ${ignored}`);
    } finally {
      cleanup();
    }
  });

  test('cli messages - a --layer that matches no tensor warns in plan and quantize', async () => {
    const { dir, cleanup } = tempDir('aq-cli-nomatch-');
    try {
      const p = await run(['plan', BF16, '--mixed-precision', '--layer', 'model.layers.99.*=8', '--json']);
      expect(p.code).toBe(0);
      const nomatch = 'layer_bit_widths key "model.layers.99.*" matches no tensor of stories260K-bf16';
      expect(JSON.parse(p.stdout).warnings).toEqual([nomatch]);
      expect(p.stderr).toContain(`warning: ${nomatch}`);
      const q = await run(['quantize', BF16, '-o', join(dir, 'n.arrow'), '--mixed-precision', '--layer', 'model.layers.99.*=8', '--json']);
      expect(JSON.parse(q.stdout).warnings).toEqual([nomatch]);
    } finally {
      cleanup();
    }
  });

  test('cli messages - control characters in tensor names are printed escaped', async () => {
    const { dir, cleanup } = tempDir('aq-cli-escape-');
    try {
      const evil = 'w\x1b[2J\x1b]0;pwned\x07\nfake line\u202e';
      const model = await writeModel(join(dir, 'evil.safetensors'), [{ name: evil, shape: [4, 32], values: new Float32Array(128).fill(0.5) }], 'F32');
      const p = await run(['plan', model]);
      expect(p.code).toBe(0);
      expect(p.stderr).not.toMatch(/[\x00-\x09\x0b-\x1f\u202e]/);
      expect(p.stderr).toContain('w\\x1b[2J\\x1b]0;pwned\\x07\\x0afake line\\u202e');
      const out = join(dir, 'evil.arrow');
      expect((await run(['quantize', model, '-o', out])).code).toBe(0);
      const i = await run(['inspect', out]);
      expect(i.stderr).not.toMatch(/[\x00-\x09\x0b-\x1f\u202e]/);
      expect(i.stderr).toContain('w\\x1b[2J');
      expect(printable('a\tb\nc', true)).toBe('a\\x09b\nc');
    } finally {
      cleanup();
    }
  });
});
