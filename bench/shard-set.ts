// Pre-made shards of a benchmark job, quantized once on this machine (one thread, so the time is
// also a per-core rate) and kept in .bench/ next to the model, keyed by the job id.

import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dataRangeIn, digestChunks } from '../core/format/shard-digest.js';
import { join } from 'node:path';
import { packageRoot } from '../core/package-info.js';
import { encodeShardChunks } from '../core/format/arrow-file.js';
import type { PreparedJob } from '../coordinator/job.js';
import { LayerRunner } from '../worker/layer-runner.js';
import { ThreadPool } from '../worker/thread-pool.js';

export interface ShardSet {
  dir: string;
  job_id: string;
  layers: { index: number; plan_hash: string; size: number; sha256: string; file: string }[];
  bytes_in: number;
  shard_bytes: number;
  /** input GB per second of one thread while these shards were made */
  per_core_in_gb_per_s: number;
}

export async function shardSet(job: PreparedJob): Promise<ShardSet> {
  const dir = join(packageRoot(), '.bench', `shards-${job.id}`);
  const manifest = join(dir, 'manifest.json');
  if (existsSync(manifest)) return JSON.parse(readFileSync(manifest, 'utf8')) as ShardSet;
  process.stderr.write(`making the ${job.tasks.length} shards of job ${job.id} (once) …\n`);
  mkdirSync(dir, { recursive: true });
  const { layers, elapsed } = await quantizeAll(job, (i, chunks) => {
    const file = join(dir, `${i}.shard`);
    writeFileSync(file, Buffer.concat(chunks));
    return file;
  });
  const set: ShardSet = {
    dir, job_id: job.id, layers, bytes_in: job.plan.totalBytesIn, shard_bytes: layers.reduce((s, l) => s + l.size, 0),
    per_core_in_gb_per_s: job.plan.totalBytesIn / 1e9 / elapsed,
  };
  writeFileSync(`${manifest}.tmp`, JSON.stringify(set));
  renameSync(`${manifest}.tmp`, manifest);
  return set;
}

/** Quantize the job's layers on one thread; `keep` stores each shard. Returns what was made and the seconds it took. */
export async function quantizeAll(
  job: PreparedJob, keep: (index: number, chunks: Uint8Array[]) => string, limit = job.tasks.length,
): Promise<{ layers: ShardSet['layers']; elapsed: number; bytesIn: number }> {
  const pool = await ThreadPool.start(1);
  const runner = new LayerRunner(pool);
  const layers: ShardSet['layers'] = [];
  let elapsed = 0;
  let bytesIn = 0;
  try {
    for (const task of job.tasks.slice(0, limit)) {
      const t0 = performance.now();
      const result = await runner.run(task);
      elapsed += (performance.now() - t0) / 1000;
      bytesIn += task.byte_length;
      try {
        const chunks = await encodeShardChunks(result.record);
        const size = chunks.reduce((s, c) => s + c.byteLength, 0);
        const range = dataRangeIn(chunks, result.record.data)!;
        layers.push({ index: task.layer_index, plan_hash: task.plan_hash, size, sha256: digestChunks(chunks, range), file: keep(task.layer_index, chunks) });
      } finally {
        result.release();
      }
    }
  } finally {
    await pool.close();
  }
  return { layers, elapsed, bytesIn };
}
