// A full disk is a clear error (exit 1) and leaves nothing behind: a 256 KiB tmpfs stands in for
// the disk. Needs root to mount; skipped, saying so, where mounting is not allowed.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { FIXTURE_MODELS, runCli } from './helpers/cli.js';
import { tempDir } from './helpers/models.js';

const { dir, cleanup } = tempDir('aq-full-');
const mnt = join(dir, 'tiny');
mkdirSync(mnt);
let mounted = false;
try {
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', mnt], { stdio: 'ignore' });
  mounted = true;
} catch {
  mounted = false;
}
afterAll(() => {
  if (mounted) execFileSync('umount', [mnt]);
  cleanup();
});

describe('full disk', () => {
  test.skipIf(!mounted)('full disk - quantize into a full file system fails clearly and leaves nothing (skipped without permission to mount a tmpfs)', async () => {
    const out = join(mnt, 'out.arrow');
    const r = await runCli(['quantize', join(FIXTURE_MODELS, 'stories260K-bf16.safetensors'), '-o', out]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/cannot write .*out\.arrow: the disk is full/);
    expect(readdirSync(mnt)).toEqual([]);
    const d = await runCli(['sample-model', join(mnt, 'big.safetensors'), '--hidden', '256', '--layers', '2']);
    expect(d.code).toBe(1);
    expect(d.stderr).toMatch(/cannot write .*big\.safetensors: the disk is full/);
    expect(readdirSync(mnt)).toEqual([]);
  });
});
