// The row reader's open files: a bounded LRU, all closed by close() and by a closing thread pool
// (Node closes the fds a worker thread opened when it is terminated: this test keeps it so).
import { execFileSync } from 'node:child_process';
import { readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { MAX_OPEN_FILES, RowReader, zeroTimings } from '../core/model/row-reader.js';
import { ThreadPool } from '../worker/thread-pool.js';
import { ModelFormatError } from '../core/errors.js';
import { tempDir } from './helpers/models.js';

const { dir, cleanup } = tempDir('aq-rowreader-');
afterAll(cleanup);

const FILES = 12;
/** File i holds 8 bytes of padding, then one F32 row [i, -2i]. */
const files = Array.from({ length: FILES }, (_, i) => {
  const f = join(dir, `part-${i}.bin`);
  writeFileSync(f, Buffer.concat([Buffer.alloc(8), Buffer.from(Float32Array.of(i, -2 * i).buffer)]));
  return f;
});

/** Fds of this process open on the test's files. */
function openTestFiles(): number {
  let n = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`).startsWith(dir)) n++;
    } catch {
      // the fd readdir itself used is gone by now
    }
  }
  return n;
}

describe('row reader', () => {
  for (const sync of [true, false]) {
    test(`row reader - ${FILES} distinct files through one ${sync ? 'sync' : 'async'} reader keep at most ${MAX_OPEN_FILES} open; close() closes them`, async () => {
      const reader = new RowReader(sync);
      const before = openTestFiles();
      for (let round = 0; round < 2; round++) {
        for (let i = 0; i < FILES; i++) {
          const bytes = await reader.read({ file: files[i]!, dataStart: 8, dtype: 'F32', cols: 2 }, 0, 1, zeroTimings());
          expect(Array.from(new Float32Array(Uint8Array.from(bytes).buffer))).toEqual([i, -2 * i]);
          expect(openTestFiles() - before).toBeLessThanOrEqual(MAX_OPEN_FILES);
        }
      }
      expect(openTestFiles() - before).toBe(MAX_OPEN_FILES);
      await reader.close();
      expect(openTestFiles()).toBe(before);
    });
  }

  for (const sync of [true, false]) {
    test(`row reader - a FIFO in place of a model file (${sync ? 'sync' : 'async'}): ModelFormatError at once, nothing left open`, async () => {
      const fifo = join(dir, `swapped-${sync ? 'sync' : 'async'}.fifo`);
      execFileSync('mkfifo', [fifo]);
      const reader = new RowReader(sync);
      const before = openTestFiles();
      const read = reader.read({ file: fifo, dataStart: 8, dtype: 'F32', cols: 2 }, 0, 1, zeroTimings());
      await expect(read).rejects.toThrow(ModelFormatError);
      await expect(read).rejects.toThrow(`${fifo} is not a regular file`);
      expect(openTestFiles()).toBe(before);
      await reader.close();
    }, 10_000);
  }

  test('row reader - a closed thread pool leaves none of the files its threads read open', async () => {
    const before = openTestFiles();
    const pool = await ThreadPool.start(2);
    try {
      for (let i = 0; i < 3; i++) {
        const r = await pool.run({ op: 'colabsmax', loc: { file: files[i]!, dataStart: 8, dtype: 'F32', cols: 2 }, rowStart: 0, rowEnd: 1 });
        expect(Array.from(r.colAbsMax!)).toEqual([i, 2 * i]);
      }
      expect(openTestFiles()).toBeGreaterThan(before);
    } finally {
      await pool.close();
    }
    expect(openTestFiles()).toBe(before);
  });
});
