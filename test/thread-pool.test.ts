// The quantization thread pool when threads die and cannot be replaced.
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { describe, expect, test } from 'vitest';
import { ThreadPool } from '../worker/thread-pool.js';
import { ArrowQuantError } from '../core/errors.js';
import { ROOT } from './helpers/cli.js';

describe('thread pool', () => {
  test('thread pool - a dead thread whose replacement fails is reported; with none left run() fails with the reason', async () => {
    const threads: Worker[] = [];
    let failSpawns = false;
    const shrinks: string[] = [];
    let shrunk: () => void = () => undefined;
    const nextShrink = () => new Promise<void>((r) => (shrunk = r));
    const pool = await ThreadPool.start(2, {
      spawnThread: () => {
        const w = new Worker(failSpawns ? join(ROOT, 'dist', 'no-such-thread.js') : join(ROOT, 'dist', 'worker', 'quant-thread.js'));
        threads.push(w);
        return w;
      },
      onShrink: (m) => {
        shrinks.push(m);
        shrunk();
      },
    });
    try {
      const hash = () => pool.run({ op: 'hash', data: new Uint8Array([1, 2, 3]) });
      expect((await hash()).ok).toBe(true);
      failSpawns = true;
      let shrink = nextShrink();
      await threads[0]!.terminate();
      await shrink;
      expect(shrinks[0]).toMatch(/a quantization thread died \(thread exited with code 1\) and its replacement failed to start: .*no-such-thread\.js.*; 1 of 2 threads left/);
      expect(pool.alive).toBe(1);
      expect((await hash()).ok).toBe(true); // still serving on the one left
      shrink = nextShrink();
      await threads[1]!.terminate();
      await shrink;
      expect(shrinks).toHaveLength(2);
      expect(pool.alive).toBe(0);
      const err = await hash().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ArrowQuantError);
      expect((err as Error).message).toMatch(/^no quantization threads left: a quantization thread died \(thread exited with code 1\) and its replacement failed to start: /);
    } finally {
      await pool.close();
    }
  });
});
