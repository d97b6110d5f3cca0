// The JetStream resources of a cluster, created or reused by whichever process gets there first:
// the task work-queue stream, the one durable pull consumer shared by every worker, and the two
// key-value buckets. Creating them is idempotent and safe when several processes race.

import {
  AckPolicy, DeliverPolicy, DiscardPolicy, RetentionPolicy, StorageType, nanos,
  type JetStreamManager, type KV, type NatsConnection,
} from 'nats';
import { JOBS_BUCKET, TASK_STREAM, WORKERS_BUCKET, WORKER_CONSUMER } from './names.js';
import { NatsConnectionError } from './errors.js';

export interface TaskQueueSettings {
  /** how long a delivered task may go without an ack or an in-progress heartbeat */
  ackWaitMs: number;
  /** deliveries before a task counts as failed */
  maxDeliver: number;
}

/** Tasks and job state older than this are gone (a job's lease rewrites its state while it runs). */
const TASK_MAX_AGE_MS = 7 * 24 * 3600_000;
const JOB_STATE_TTL_MS = 7 * 24 * 3600_000;
/** The largest task message the stream takes. */
const TASK_MAX_BYTES = 1024 * 1024;

export function taskQueueSettings(env: NodeJS.ProcessEnv = process.env): TaskQueueSettings {
  const num = (name: string, dflt: number) => {
    const v = Number(env[name]);
    return Number.isFinite(v) && v > 0 ? v : dflt;
  };
  return { ackWaitMs: num('ARROW_QUANT_TASK_ACK_WAIT_MS', 30_000), maxDeliver: num('ARROW_QUANT_TASK_MAX_DELIVER', 5) };
}

const isAlreadyExists = (e: unknown) => /already in use|already exists|stream name already/i.test(String((e as Error)?.message));
const isNotFound = (e: unknown) => /not found/i.test(String((e as Error)?.message));

async function jetStreamManager(nc: NatsConnection): Promise<JetStreamManager> {
  try {
    return await nc.jetstreamManager();
  } catch (e) {
    throw new NatsConnectionError(`JetStream is not available on ${nc.getServer()} (start nats-server with -js): ${(e as Error).message}`, [nc.getServer()], { cause: e });
  }
}

export async function ensureTaskQueue(nc: NatsConnection, s: TaskQueueSettings = taskQueueSettings()): Promise<void> {
  const jsm = await jetStreamManager(nc);
  try {
    const { config } = await jsm.streams.info(TASK_STREAM);
    if (!config.max_age || config.max_msg_size <= 0) {
      // A stream made before it had limits gets them. Best effort: only a user allowed to manage
      // streams can (a coordinator, not a worker), and the stream works without them.
      await jsm.streams.update(TASK_STREAM, { ...config, max_age: nanos(TASK_MAX_AGE_MS), max_msg_size: TASK_MAX_BYTES }).catch(() => undefined);
    }
  } catch (e) {
    if (!isNotFound(e)) throw e;
    try {
      await jsm.streams.add({
        name: TASK_STREAM,
        subjects: ['aq.tasks.>'],
        retention: RetentionPolicy.Workqueue,
        storage: StorageType.File,
        discard: DiscardPolicy.Old,
        duplicate_window: nanos(10 * 60_000),
        // Left-over tasks (of jobs that died, of refused layers) do not accumulate forever.
        max_age: nanos(TASK_MAX_AGE_MS),
        max_msg_size: TASK_MAX_BYTES,
      });
    } catch (e2) {
      if (!isAlreadyExists(e2)) throw e2;
    }
  }
  const config = {
    durable_name: WORKER_CONSUMER,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(s.ackWaitMs),
    max_deliver: s.maxDeliver,
  };
  try {
    const info = await jsm.consumers.info(TASK_STREAM, WORKER_CONSUMER);
    if (info.config.ack_wait !== config.ack_wait || info.config.max_deliver !== config.max_deliver) {
      await jsm.consumers.update(TASK_STREAM, WORKER_CONSUMER, { ack_wait: config.ack_wait, max_deliver: config.max_deliver });
    }
  } catch (e) {
    if (!isNotFound(e)) throw e;
    try {
      await jsm.consumers.add(TASK_STREAM, config);
    } catch (e2) {
      if (!isAlreadyExists(e2)) throw e2;
    }
  }
}

export async function jobsBucket(nc: NatsConnection): Promise<KV> {
  await jetStreamManager(nc);
  return nc.jetstream().views.kv(JOBS_BUCKET, { history: 1, ttl: JOB_STATE_TTL_MS });
}

/** Entries expire: a worker that stops heartbeating disappears from `status`. */
export async function workersBucket(nc: NatsConnection, ttlMs = 15_000): Promise<KV> {
  await jetStreamManager(nc);
  return nc.jetstream().views.kv(WORKERS_BUCKET, { history: 1, ttl: ttlMs });
}
