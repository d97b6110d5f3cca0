// The coordinator's writes to the job state (NATS key-value) beyond the lease: a layer's record
// retried while NATS restarts, layer keys deleted, and a stopped job abandoned.

import type { KV, NatsConnection } from 'nats';
import { ArrowQuantError } from '../../core/errors.js';
import { cancelSubject, layerKey } from '../../core/cluster/names.js';
import { encodeMessage } from '../../core/cluster/messages.js';
import type { PreparedJob } from '../job.js';
import type { JobLease } from './job-lease.js';

/** How long recording a layer already written to the output is retried before the job fails. */
const RECORD_RETRY_MS = 30_000;

/** Retries until recorded, the deadline, or the job has stopped (a cancelled job must not wait on NATS). */
export async function putRetrying(kv: KV, key: string, value: Uint8Array, log: (l: string) => void, stopped: () => boolean): Promise<void> {
  const deadline = Date.now() + RECORD_RETRY_MS;
  for (let attempt = 0; ; attempt++) {
    try {
      await kv.put(key, value);
      return;
    } catch (e) {
      if (stopped()) throw new ArrowQuantError(`the job stopped before "${key}" could be recorded: ${(e as Error).message}`, { cause: e });
      if (Date.now() > deadline) throw new ArrowQuantError(`cannot record "${key}" in the job state for ${RECORD_RETRY_MS / 1000} s: ${(e as Error).message}`, { cause: e });
      if (attempt === 0) log(`coordinator: recording "${key}" failed (${(e as Error).message}); retrying`);
      await new Promise((r) => setTimeout(r, Math.min(2_000, 100 * 2 ** attempt)));
    }
  }
}

export async function deleteKey(kv: KV, key: string): Promise<void> {
  try {
    await kv.delete(key);
  } catch (e) {
    throw new ArrowQuantError(`cannot delete "${key}" from the job state (NATS key-value bucket): ${(e as Error).message}`, { cause: e });
  }
}

/**
 * Tell workers to drop this run's layers and record the outcome. Its pending tasks stay queued: no
 * subject-filtered purge (on nats-server 2.9 it moves the shared consumer past other jobs' tasks);
 * workers drop a task whose job no live coordinator holds as soon as it is delivered.
 */
export async function abandonJob(
  nc: NatsConnection, kv: KV, lease: JobLease, job: PreparedJob, runId: string, state: 'failed' | 'cancelled', message: string, forgetShards: boolean,
): Promise<void> {
  nc.publish(cancelSubject(job.id), encodeMessage({ run_id: runId }));
  await lease.finish(state, message).catch(() => undefined);
  // The job's own error is what the user needs; a key left over is reconciled by a later run.
  if (forgetShards) await deleteLayerKeys(kv, job).catch((e: Error) => process.stderr.write(`coordinator: warning: ${e.message}\n`));
}

export async function deleteLayerKeys(kv: KV, job: PreparedJob): Promise<void> {
  for (const t of job.tasks) await deleteKey(kv, layerKey(job.id, t.layer_index));
}
