// The output file's writer (core/format/output-file.ts): with O_DIRECT (a page-aligned window,
// blocks read back around writes that are not sequential) and through the page cache, the file
// ends up exactly as a plain file written with the same calls would; flush() puts every byte
// written so far into the file, which a SIGKILLed process then keeps.
import { spawn } from 'node:child_process';
import { closeSync, constants, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, test } from 'vitest';
import { OutputFile } from '../core/format/output-file.js';
import { seededRandom as rng } from '../core/model/random.js';
import { FIXTURE_MODELS, ROOT, runCli } from './helpers/cli.js';
import { tempDir } from './helpers/models.js';

const { dir, cleanup } = tempDir('aq-output-file-');
afterAll(cleanup);
afterEach(() => {
  delete process.env.ARROW_QUANT_DIRECT_IO;
});

const MiB = 1 << 20;

/** Whether this directory's file system takes O_DIRECT writes (checked without the code under test). */
function directWorksIn(where: string): boolean {
  const p = join(where, 'probe');
  try {
    const fd = openSync(p, constants.O_RDWR | constants.O_CREAT | constants.O_DIRECT);
    try {
      const aligned = Buffer.from(new WebAssembly.Memory({ initial: 1 }).buffer, 0, 4096);
      writeSync(fd, aligned, 0, 4096, 0);
      return true;
    } finally {
      closeSync(fd);
    }
  } catch {
    return false;
  } finally {
    if (existsSync(p)) rmSync(p);
  }
}

/** A plain file's content after the same writes and truncations. */
class Model {
  bytes = Buffer.alloc(0);
  write(b: Uint8Array, at: number): void {
    if (at + b.byteLength > this.bytes.length) {
      const grown = Buffer.alloc(at + b.byteLength);
      this.bytes.copy(grown);
      this.bytes = grown;
    }
    this.bytes.set(b, at);
  }
  truncate(n: number): void {
    const t = Buffer.alloc(n);
    this.bytes.copy(t, 0, 0, Math.min(n, this.bytes.length));
    this.bytes = t;
  }
}

function piece(r: () => number, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (r() * 256) | 0;
  return b;
}

/** Random appends (some crossing the window's halves), overwrites, holes, truncations and flushes, several writes in flight at once. */
async function exercise(path: string, seed: number): Promise<{ file: OutputFile; model: Model }> {
  const r = rng(seed);
  const file = await OutputFile.create(path);
  const model = new Model();
  const size = () => model.bytes.length;
  for (let step = 0; step < 60; step++) {
    const kind = r();
    if (kind < 0.5) {
      // a burst of sequential appends issued together, as an upload's chunks are (or as one writev of them)
      const pending: Promise<void>[] = [];
      const asOne = r() < 0.4;
      const pieces: Buffer[] = [];
      const from = size();
      for (let k = 1 + ((r() * 4) | 0); k > 0; k--) {
        const b = piece(r, r() < 0.2 ? 1 + ((r() * 6 * MiB) | 0) : 1 + ((r() * 70_000) | 0));
        const at = size();
        model.write(b, at);
        if (asOne) pieces.push(b);
        else pending.push(file.write(b, at));
      }
      if (asOne) pending.push(file.writev(pieces, from));
      await Promise.all(pending);
    } else if (kind < 0.7) {
      const b = piece(r, 1 + ((r() * 20_000) | 0));
      const at = (r() * size()) | 0; // inside the file, maybe over its end
      model.write(b, at);
      await file.write(b, at);
    } else if (kind < 0.78) {
      const b = piece(r, 1 + ((r() * 5000) | 0));
      const at = size() + ((r() * 9000) | 0); // past the end: a hole
      model.write(b, at);
      await file.write(b, at);
    } else if (kind < 0.86) {
      const n = (r() * size()) | 0;
      model.truncate(n);
      await file.truncate(n);
    } else {
      await file.flush();
      // everything so far is in the file, seen through another descriptor
      const seen = readFileSync(path);
      expect(seen.length).toBeGreaterThanOrEqual(size());
      expect(seen.subarray(0, size()).equals(model.bytes), `seed ${seed} step ${step}: file after flush`).toBe(true);
    }
  }
  return { file, model };
}

describe('output file', () => {
  const direct = directWorksIn(dir);

  test.skipIf(!direct)('output file - with O_DIRECT: random appends, overwrites, holes and truncations end as a plain file would, at its exact length', async () => {
    for (const seed of (process.env.AQ_SEEDS ?? "1,2,3").split(",").map(Number)) {
      const path = join(dir, `direct-${seed}.bin`);
      const { file, model } = await exercise(path, seed);
      expect(file.direct).toBe(true);
      await file.close();
      const got = readFileSync(path);
      expect(got.length, `seed ${seed}`).toBe(model.bytes.length);
      expect(got.equals(model.bytes), `seed ${seed}`).toBe(true);
    }
  });

  test('output file - through the page cache (ARROW_QUANT_DIRECT_IO=0): the same calls give the same file', async () => {
    process.env.ARROW_QUANT_DIRECT_IO = '0';
    const path = join(dir, 'buffered.bin');
    const { file, model } = await exercise(path, 1);
    expect(file.direct).toBe(false);
    await file.sync();
    await file.close();
    expect(readFileSync(path).equals(model.bytes)).toBe(true);
  });

  test.skipIf(!direct)('output file - an existing file is continued where asked: the bytes around the write are kept, the length is exact after sync', async () => {
    const path = join(dir, 'existing.bin');
    const before = piece(rng(9), 3 * MiB + 777);
    writeFileSync(path, before);
    const file = await OutputFile.existing(path);
    expect(file.direct).toBe(true);
    const patch = piece(rng(10), 5000);
    await file.write(patch, 4096 * 3 + 11); // straddles blocks in the middle of the file
    const tail = piece(rng(11), 2 * MiB);
    await file.write(tail, before.length);
    await file.write(Buffer.from('head'), 1); // the first block again, as the schema region is at finish
    await file.sync();
    const want = Buffer.concat([before, tail]);
    patch.copy(want, 4096 * 3 + 11);
    Buffer.from('head').copy(want, 1);
    expect(statSync(path).size).toBe(want.length);
    expect(readFileSync(path).equals(want)).toBe(true);
    await file.close();
  });

  test('output file - on tmpfs, whatever it supports, the file is right', async () => {
    if (!existsSync('/dev/shm')) return;
    const shm = tempDirIn('/dev/shm');
    try {
      const path = join(shm, 'shm.bin');
      const { file, model } = await exercise(path, 4);
      await file.close();
      expect(readFileSync(path).equals(model.bytes)).toBe(true);
    } finally {
      rmSync(shm, { recursive: true, force: true });
    }
  });

  test('output file - ARROW_QUANT_DIRECT_IO takes 0 or 1; anything else is an error naming it', async () => {
    process.env.ARROW_QUANT_DIRECT_IO = 'off';
    await expect(OutputFile.create(join(dir, 'bad-env.bin'))).rejects.toThrow(/ARROW_QUANT_DIRECT_IO must be 0 or 1, got "off"/);
    expect(existsSync(join(dir, 'bad-env.bin'))).toBe(false);
    const out = join(dir, 'bad-env.arrow');
    const r = await runCli(['quantize', join(FIXTURE_MODELS, 'stories260K-bf16.safetensors'), '-o', out], { env: { ARROW_QUANT_DIRECT_IO: 'off' } });
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/ARROW_QUANT_DIRECT_IO must be 0 or 1, got "off"/);
    expect(readdirSync(dir).filter((f) => f.startsWith('bad-env'))).toEqual([]);
  });

  test('output file - a write after a failure fails with it, and discard() never throws', async () => {
    const path = join(dir, 'failing.bin');
    const file = await OutputFile.create(path);
    await file.write(Buffer.alloc(10, 1), 0);
    await file.discard();
    await expect(file.write(Buffer.alloc(10), 10)).rejects.toThrow(/discarded/);
    await file.discard();
  });

  test('output file - bytes flushed before the process is SIGKILLed are in the file; the window\'s unflushed ones are not required', async () => {
    const path = join(dir, 'killed.bin');
    const script = `
      import { OutputFile } from ${JSON.stringify(join(ROOT, 'dist', 'core', 'format', 'output-file.js'))};
      const f = await OutputFile.create(${JSON.stringify(path)});
      const b = Buffer.alloc(${6 * MiB + 123});
      for (let i = 0; i < b.length; i++) b[i] = (i * 7 + 3) & 255;
      await f.write(b, 0);
      await f.flush();
      await f.write(Buffer.alloc(1000, 9), b.length); // still in the window when killed
      process.stdout.write('flushed\\n');
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => d.toString().includes('flushed') && resolve());
      child.on('exit', (code) => reject(new Error(`child exited ${code} before flushing`)));
    });
    const exited = new Promise((r) => child.on('exit', r));
    child.kill('SIGKILL');
    await exited;
    const got = readFileSync(path);
    expect(got.length).toBeGreaterThanOrEqual(6 * MiB + 123);
    for (let i = 0; i < 6 * MiB + 123; i += 4099) expect(got[i], `byte ${i}`).toBe((i * 7 + 3) & 255);
    expect(got[6 * MiB + 122]).toBe(((6 * MiB + 122) * 7 + 3) & 255);
  });
});

function tempDirIn(root: string): string {
  return mkdtempSync(join(root, 'aq-output-file-'));
}
