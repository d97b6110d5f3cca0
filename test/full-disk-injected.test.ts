// A disk that fills up in the middle of the output (ENOSPC injected into the output's writes by
// a preload, on any file system): the local run fails at once, exit 1, names the cause and the
// path, and leaves no temporary file. Before, later layers waited for their turn forever.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { FIXTURE_MODELS, ROOT, runCli } from './helpers/cli.js';
import { tempDir } from './helpers/models.js';

const { dir, cleanup } = tempDir('aq-enospc-');
afterAll(cleanup);

describe('full disk injected', () => {
  test('full disk injected - ENOSPC in the middle of the output: exit 1 naming the cause and the path, no temp file left', async () => {
    const out = join(dir, 'out.arrow');
    const r = await runCli(['quantize', join(FIXTURE_MODELS, 'stories260K-bf16.safetensors'), '-o', out, '--threads', '2'], {
      env: { NODE_OPTIONS: `--require ${join(ROOT, 'test', 'helpers', 'enospc-preload.cjs')}`, AQ_TEST_ENOSPC_MATCH: 'out\\.arrow\\.tmp-\\d+$', AQ_TEST_ENOSPC_AFTER: String(100 << 10) },
      timeoutMs: 60_000,
    });
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/cannot write .*out\.arrow: the disk is full \(no space left on device\)/);
    expect(readdirSync(dir)).toEqual([]);
  });

  test('full disk injected - a failed background datasync of the output: exit 1 naming the cause and the path, no temp file left', async () => {
    const out = join(dir, 'synced.arrow');
    const r = await runCli(['quantize', join(FIXTURE_MODELS, 'stories260K-bf16.safetensors'), '-o', out, '--threads', '2'], {
      env: {
        NODE_OPTIONS: `--require ${join(ROOT, 'test', 'helpers', 'enospc-preload.cjs')}`,
        AQ_TEST_ENOSPC_MATCH: 'synced\\.arrow\\.tmp-\\d+$',
        AQ_TEST_DATASYNC_EIO: '1',
        ARROW_QUANT_FLUSH_BEHIND_BYTES: String(64 << 10),
      },
      timeoutMs: 60_000,
    });
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/cannot write .*synced\.arrow: syncing it to disk failed \(EIO: i\/o error, fdatasync\)/);
    expect(readdirSync(dir)).toEqual([]);
  });
});
