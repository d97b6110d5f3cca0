// A restarted coordinator's stage directory against the job state: which staged shards count as
// done (here, matching the recorded hash, exactly what the plan produces) and which are redone.

import { digestShard } from '../../core/format/shard-digest.js';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import type { KV } from 'nats';
import { decodeShard } from '../../core/format/arrow-file.js';
import { layerKey } from '../../core/cluster/names.js';
import { decodeMessage, stagedLayerSchema } from '../../core/cluster/messages.js';
import type { LayerTask } from '../../core/job/layer-task.js';
import type { FinishedLayer, PreparedJob } from '../job.js';
import { finishedFromRecord } from '../run/finished-layer.js';
import { shardPath } from './shard-server.js';
import { partialOutputPath } from './partial-output.js';
import { checkShardRecord } from './shard-check.js';
import { deleteKey } from './job-state.js';

/**
 * Reconcile the job state with this run's stage directory before any task is published. A layer
 * counts as done only if its shard is here (where this run's merge reads it), matches the hash
 * the job state recorded and is exactly what the plan produces for it. Every other recorded
 * layer loses its key (so no worker skips it as "already staged") and every other staged file is
 * removed: both are redone.
 */
export async function resumeStaged(
  job: PreparedJob, stageDir: string, kv: KV, log: (l: string) => void, finished: Map<number, FinishedLayer>, recorded: Map<number, string>,
): Promise<void> {
  const missing: number[] = [];
  for (const task of job.tasks) {
    const i = task.layer_index;
    if (finished.has(i)) continue; // found in the partial output
    const key = layerKey(job.id, i);
    const entry = await kv.get(key);
    const path = shardPath(stageDir, i);
    const hash = entry && entry.value.length ? recordedHash(entry.value) : null;
    const why = hash === null ? (existsSync(path) ? 'the job state has no record of it' : null) : staleReason(job, task, path, hash, finished);
    if (why === null) {
      if (hash !== null) recorded.set(i, hash);
      continue;
    }
    if (why === 'missing') missing.push(i);
    else log(`coordinator: staged shard of layer ${i} is not usable (${why}); it will be redone`);
    rmSync(path, { force: true });
    if (entry) await deleteKey(kv, key);
  }
  if (missing.length) {
    log(`coordinator: ${missing.length} layers recorded in the job state are neither in ${partialOutputPath(job)} nor staged in ${stageDir} (layers ${missing.join(', ')}); they will be redone`);
  }
}

/** The SHA-256 a job-state entry records, or '' when the entry is not readable. */
function recordedHash(value: Uint8Array): string {
  try {
    return decodeMessage(stagedLayerSchema, value, 'job state').sha256;
  } catch {
    return '';
  }
}

/** Why the staged shard at `path` cannot be used (adding it to `finished` when it can: null). */
function staleReason(job: PreparedJob, task: LayerTask, path: string, recorded: string, finished: Map<number, FinishedLayer>): string | null {
  if (!existsSync(path)) return 'missing';
  const bytes = readFileSync(path);
  const { sha256: sha, dataSha256 } = digestShard(bytes);
  if (sha !== recorded) return `its digest ${sha} is not the recorded ${recorded || '(unreadable record)'}`;
  try {
    const record = decodeShard(bytes, `staged shard of layer ${task.layer_index}`).record;
    checkShardRecord(record, task, dataSha256);
    finished.set(task.layer_index, finishedFromRecord(job, record));
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

