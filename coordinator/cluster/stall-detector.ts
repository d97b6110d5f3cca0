// How a coordinator learns that its job cannot finish, from durable state rather than from
// at-most-once events: refusals workers recorded in the job state, the shared consumer holding
// none of its tasks any more, and a job making no progress for the stall timeout (with why:
// no live workers, what is pending). A lost event or advisory delays the verdict by one tick.

import type { KV, NatsConnection } from 'nats';
import { deserializeError } from '../../core/errors.js';
import { DeliveriesExhaustedError, JobStalledError, TaskRefusedError } from '../../core/cluster/errors.js';
import { decodeMessage, taskMessageSchema, workerEventSchema } from '../../core/cluster/messages.js';
import { TASK_STREAM, WORKER_CONSUMER, failureKey, failureKeys, refusalKey, refusalKeys } from '../../core/cluster/names.js';

export function stallTimeoutMs(env: NodeJS.ProcessEnv = process.env): number {
  const v = Number(env.ARROW_QUANT_STALL_TIMEOUT_MS);
  return Number.isFinite(v) && v > 0 ? v : 10 * 60_000;
}

/** The failure a worker recorded for a layer (null when none is): what an event claims is checked here. */
/** Why a job (or its measurement) may be making no progress: no live worker, or what the shared consumer holds. */
export async function stallReason(workersKv: KV, info: { num_pending: number; num_ack_pending: number }): Promise<string> {
  let workers = 0;
  for await (const _ of await workersKv.keys()) workers++;
  return workers === 0
    ? 'no live workers (none has a heartbeat in the aq-workers bucket)'
    : `${workers} live worker(s); ${info.num_pending} task(s) queued and ${info.num_ack_pending} in flight on the shared consumer`;
}

export async function recordedFailure(kv: KV, jobId: string, layer: number): Promise<Error | null> {
  const e = await kv.get(refusalKey(jobId, layer));
  if (!e || e.operation !== 'PUT' || !e.value.length) return null;
  const ev = decodeMessage(workerEventSchema, e.value, `job state ${e.key}`);
  if (ev.job_id !== jobId || ev.layer_index !== layer) return null;
  return ev.type === 'task_refused' ? new TaskRefusedError(ev.reason, ev.name, ev.worker_id) : deserializeError(ev.error);
}

/** "<worker>: <message>" of the last failure a worker recorded for a layer before it was retried, or null. */
export async function lastFailure(kv: KV, jobId: string, layer: number): Promise<string | null> {
  const e = await kv.get(failureKey(jobId, layer));
  if (!e || e.operation !== 'PUT' || !e.value.length) return null;
  try {
    const ev = decodeMessage(workerEventSchema, e.value, `job state ${e.key}`);
    if (ev.job_id !== jobId || ev.layer_index !== layer) return null;
    return `${ev.worker_id}: ${ev.type === 'task_refused' ? ev.reason : ev.error.message}`;
  } catch {
    return null;
  }
}

/** A layer whose deliveries ran out, with the last failure recorded for it (the cause, e.g. a full disk). */
export async function exhaustedError(kv: KV, jobId: string, layer: number, name: string, deliveries: number | undefined): Promise<DeliveriesExhaustedError> {
  const last = await lastFailure(kv, jobId, layer).catch(() => null);
  const n = deliveries ? `${deliveries}` : 'the maximum number of';
  return new DeliveriesExhaustedError(
    `layer ${layer} (${name}): ${n} deliveries failed; ${last === null ? "see the workers' logs" : `last: ${last}`}`,
    name,
    deliveries ?? 0,
  );
}

/** Forget the recorded failures of a job (a new run starts clean, a finished one leaves nothing). */
export async function clearFailures(kv: KV, jobId: string): Promise<void> {
  const keys: string[] = [];
  for (const pattern of [refusalKeys(jobId), failureKeys(jobId)]) for await (const k of await kv.keys(pattern)) keys.push(k);
  for (const k of keys) await kv.delete(k);
}

/**
 * The max-deliveries advisory (at most once: the detector's empty-queue check is the fallback):
 * fails the job when the exhausted task is one of its missing layers.
 */
export async function onMaxDeliveries(
  nc: NatsConnection, kv: KV, data: Uint8Array, jobId: string, isDone: (layer: number) => boolean, fail: (e: unknown) => void, log: (l: string) => void,
): Promise<void> {
  try {
    const adv = JSON.parse(new TextDecoder().decode(data)) as { stream_seq?: number; deliveries?: number };
    if (!adv.stream_seq) return;
    const jsm = await nc.jetstreamManager();
    const sm = await jsm.streams.getMessage(TASK_STREAM, { seq: adv.stream_seq });
    const tm = decodeMessage(taskMessageSchema, sm.data, sm.subject);
    if (tm.task.job_id !== jobId || isDone(tm.task.layer_index)) return;
    fail(await exhaustedError(kv, jobId, tm.task.layer_index, tm.task.name, adv.deliveries));
  } catch (e) {
    log(`coordinator: could not read a max-deliveries advisory: ${(e as Error).message}`);
  }
}

export interface StallWatch {
  nc: NatsConnection;
  kv: KV;
  workersKv: KV;
  jobId: string;
  layers: number;
  done: () => number;
  isDone: (layer: number) => boolean;
  fail: (e: Error) => void;
  stallMs: number;
  /**
   * Publish the tasks of these layers again: they left the queue without being staged (a worker
   * skipped or dropped them, or their deliveries ran out unannounced). Done once per layer.
   */
  republish?: (layers: number[]) => Promise<void>;
  log?: (line: string) => void;
  /** how often durable state is looked at (default a quarter of stallMs, 0.2–5 s) */
  tickMs?: number;
}

export class StallDetector {
  private timer: NodeJS.Timeout | null = null;
  private lastDone = -1;
  private lastProgress = Date.now();
  private emptyTicks = 0;
  private busy = false;
  private readonly republished = new Set<number>();

  constructor(private readonly w: StallWatch) {}

  start(): void {
    const tick = this.w.tickMs ?? Math.max(200, Math.min(5_000, this.w.stallMs / 4));
    this.timer = setInterval(() => void this.check(), tick);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private async check(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      const err = await this.verdict();
      if (err) {
        this.stop();
        this.w.fail(err);
      }
    } catch {
      // NATS unreachable: the next tick looks again
    } finally {
      this.busy = false;
    }
  }

  private async verdict(): Promise<Error | null> {
    const { kv, jobId } = this.w;
    const done = this.w.done();
    if (done !== this.lastDone) {
      this.lastDone = done;
      this.lastProgress = Date.now();
    }
    for await (const k of await kv.keys(refusalKeys(jobId))) {
      const layer = Number(k.slice(k.lastIndexOf('.') + 1));
      if (this.w.isDone(layer)) continue;
      const err = await recordedFailure(kv, jobId, layer);
      if (err) return err;
    }
    const info = await (await this.w.nc.jetstreamManager()).consumers.info(TASK_STREAM, WORKER_CONSUMER);
    const waiting = this.w.layers - done;
    // Nothing of any job is queued or in flight, yet layers are missing: their tasks are gone.
    this.emptyTicks = waiting > 0 && info.num_pending === 0 && info.num_ack_pending === 0 ? this.emptyTicks + 1 : 0;
    if (this.emptyTicks >= 2) {
      const missing = Array.from({ length: this.w.layers }, (_, i) => i).filter((i) => !this.w.isDone(i));
      if (await this.republishVanished(missing)) return null;
      const list = missing.slice(0, 10).join(', ') + (missing.length > 10 ? ', …' : '');
      return new DeliveriesExhaustedError(
        `job ${jobId}: ${waiting} layer(s) missing (${list}) and none of their tasks is queued or in flight any more ` +
          `(deliveries exhausted, or a worker skipped them as staged in the job state); ${await this.lastFailures(missing)}`,
        '', 0,
      );
    }
    const idleMs = Date.now() - this.lastProgress;
    if (idleMs < this.w.stallMs) return null;
    const why = await stallReason(this.w.workersKv, info);
    const missing = Array.from({ length: this.w.layers }, (_, i) => i).filter((i) => !this.w.isDone(i));
    const failures = await this.lastFailures(missing, '');
    return new JobStalledError(`job ${jobId} made no progress for ${Math.round(idleMs / 1000)} s (${done}/${this.w.layers} layers staged): ${why}${failures && `; ${failures}`}`);
  }

  /**
   * Republishes the missing layers unless one was republished before; true when it did. A layer
   * with a recorded failure is republished too: an advisory of exhausted deliveries fails the job
   * first, and a transient failure (the coordinator restarting) can precede a lost task.
   */
  private async republishVanished(missing: number[]): Promise<boolean> {
    if (!this.w.republish || missing.some((i) => this.republished.has(i))) return false;
    this.w.log?.(`coordinator: job ${this.w.jobId}: layer(s) ${missing.join(', ')} left the task queue without being staged; publishing them again (once)`);
    await this.w.republish(missing);
    for (const i of missing) this.republished.add(i);
    this.emptyTicks = 0;
    return true;
  }

  /** The last recorded failures of (the first few of) `layers`: "layer 2: last: <worker>: <message>; …", else `none`. */
  private async lastFailures(layers: number[], none = "see the workers' logs"): Promise<string> {
    const found: string[] = [];
    for (const i of layers.slice(0, 16)) {
      const last = await lastFailure(this.w.kv, this.w.jobId, i).catch(() => null);
      if (last !== null) found.push(`layer ${i}: last: ${last}`);
      if (found.length === 3) break;
    }
    return found.length ? found.join('; ') : none;
  }
}
