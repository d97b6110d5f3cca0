// Measured layer errors on disk, so a second `plan` of the same model measures nothing. An entry
// is keyed by what decides the result — the layer's source bytes (SHA-256), dtype, shape, method
// parameters, width, group size, encoding and refine — and stores the four error sums. Entries
// are checked on every read (schema, finite sums, the full key): a corrupt or foreign entry is
// ignored and re-measured, never trusted. Writes are atomic (temp file + rename).

import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import type { LayerTask } from '../core/job/layer-task.js';
import type { LayerStats } from '../core/quant/layer-stats.js';

/** Bumped whenever the kernels' error sums could change for the same key. */
const CACHE_VERSION = 'measurements-v1';
const MAX_ENTRY_BYTES = 16 * 1024;

export interface MeasurementKey {
  source_sha256: string;
  dtype: string;
  shape: number[];
  /** method and its parameters (spatial: channel maxima and alpha), hashed */
  method: string;
  bits: number;
  group_size: number;
  encoding: string;
  refine: boolean;
}

const sum = z.number().finite();
const entrySchema = z
  .object({
    key: z.object({
      source_sha256: z.string(), dtype: z.string(), shape: z.array(z.number()), method: z.string(), bits: z.number(),
      group_size: z.number(), encoding: z.string(), refine: z.boolean(),
    }).strict(),
    stats: z.object({ w2: sum.min(0), e2: sum.min(0), wq: sum, q2: sum.min(0) }).strict(),
  })
  .strict();

/** $XDG_CACHE_HOME/arrowquant, else ~/.cache/arrowquant. */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CACHE_HOME && env.XDG_CACHE_HOME.startsWith('/') ? env.XDG_CACHE_HOME : join(homedir(), '.cache');
  return join(base, 'arrowquant');
}

/** SHA-256 of a tensor's bytes in its file, read in chunks. */
export function sourceSha256(task: Pick<LayerTask, 'file' | 'data_start' | 'byte_length'>): Promise<string> {
  const hash = createHash('sha256');
  if (task.byte_length === 0) return Promise.resolve(hash.digest('hex'));
  return new Promise((resolve, reject) => {
    createReadStream(task.file, { start: task.data_start, end: task.data_start + task.byte_length - 1, highWaterMark: 1 << 20 })
      .on('data', (d) => hash.update(d))
      .on('error', reject)
      .on('end', () => resolve(hash.digest('hex')));
  });
}

/** What a task's method contributes to the key: everything that changes the quantized weights. */
export function methodIdentity(task: LayerTask): string {
  const params = { method: task.method, channel_absmax: task.channel_absmax, smooth_alpha: task.method === 'spatial' ? task.smooth_alpha : null, time_group_params: task.time_group_params };
  return `${task.method}:${createHash('sha256').update(JSON.stringify(params)).digest('hex').slice(0, 32)}`;
}

/** The key as text, its fields in a fixed order whatever order they were built in. */
const canonical = (key: MeasurementKey) => JSON.stringify(key, Object.keys(key).sort());

export class MeasurementCache {
  /** entries that were unreadable or did not match their key (re-measured) */
  rejected = 0;
  /** writes that failed (the measurement is used anyway) */
  writeFailures: string[] = [];

  /** `dir` null: no cache (every candidate is measured). */
  constructor(readonly dir: string | null) {}

  private path(key: MeasurementKey): string {
    const id = createHash('sha256').update(canonical(key)).digest('hex');
    return join(this.dir!, CACHE_VERSION, id.slice(0, 2), `${id}.json`);
  }

  get(key: MeasurementKey): LayerStats | null {
    if (this.dir === null) return null;
    let text: string;
    try {
      const path = this.path(key);
      // an entry is ~400 bytes: anything much larger is not ours, and is not read into memory
      if (statSync(path).size > MAX_ENTRY_BYTES) throw new Error('oversized');
      text = readFileSync(path, 'utf8');
    } catch (e) {
      if ((e as Error).message === 'oversized') this.rejected++;
      return null;
    }
    try {
      const entry = entrySchema.parse(JSON.parse(text));
      if (canonical(entry.key) !== canonical(key)) throw new Error('key mismatch');
      return entry.stats;
    } catch {
      this.rejected++;
      return null;
    }
  }

  put(key: MeasurementKey, stats: LayerStats): void {
    if (this.dir === null) return;
    const path = this.path(key);
    const tmp = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
    try {
      mkdirSync(join(path, '..'), { recursive: true });
      writeFileSync(tmp, JSON.stringify({ key, stats: { w2: stats.w2, e2: stats.e2, wq: stats.wq, q2: stats.q2 } }));
      renameSync(tmp, path);
    } catch (e) {
      try {
        rmSync(tmp, { force: true });
      } catch {
        // the directory itself is unusable: there is no temp file to remove
      }
      this.writeFailures.push(`${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
}
