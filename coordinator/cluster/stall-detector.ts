// How a coordinator learns that its job cannot finish, from durable state rather than from
// at-most-once events: refusals workers recorded in the job state, the shared consumer holding
// none of its tasks any more, and a job making no progress for the stall timeout (with why:
// no live workers, what is pending). A lost event or advisory delays the verdict by one tick.

import type { KV, NatsConnection } from 'nats';
import { deserializeError } from '../../core/errors.js';
import { DeliveriesExhaustedError, JobStalledError, TaskRefusedError } from '../../core/cluster/errors.js';
import { decodeMessage, workerEventSchema } from '../../core/cluster/messages.js';
import { TASK_STREAM, WORKER_CONSUMER, refusalKey, refusalKeys } from '../../core/cluster/names.js';

export function stallTimeoutMs(env: NodeJS.ProcessEnv = process.env): number {
  const v = Number(env.ARROW_QUANT_STALL_TIMEOUT_MS);
  return Number.isFinite(v) && v > 0 ? v : 10 * 60_000;
}

/** The failure a worker recorded for a layer (null when none is): what an event claims is checked here. */
export async function recordedFailure(kv: KV, jobId: string, layer: number): Promise<Error | null> {
  const e = await kv.get(refusalKey(jobId, layer));
  if (!e || e.operation !== 'PUT' || !e.value.length) return null;
  const ev = decodeMessage(workerEventSchema, e.value, `job state ${e.key}`);
  if (ev.job_id !== jobId || ev.layer_index !== layer) return null;
  return ev.type === 'task_refused' ? new TaskRefusedError(ev.reason, ev.name, ev.worker_id) : deserializeError(ev.error);
}

/** Forget the recorded failures of a job (a new run starts clean). */
export async function clearFailures(kv: KV, jobId: string): Promise<void> {
  const keys: string[] = [];
  for await (const k of await kv.keys(refusalKeys(jobId))) keys.push(k);
  for (const k of keys) await kv.delete(k);
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
}

export class StallDetector {
  private timer: NodeJS.Timeout | null = null;
  private lastDone = -1;
  private lastProgress = Date.now();
  private emptyTicks = 0;
  private busy = false;

  constructor(private readonly w: StallWatch) {}

  start(): void {
    const tick = Math.max(200, Math.min(5_000, this.w.stallMs / 4));
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
      const list = missing.slice(0, 10).join(', ') + (missing.length > 10 ? ', …' : '');
      return new DeliveriesExhaustedError(
        `job ${jobId}: ${waiting} layer(s) missing (${list}) and none of their tasks is queued or in flight any more ` +
          `(deliveries exhausted, or a worker skipped them as staged in the job state); see the workers' logs`,
        '', 0,
      );
    }
    const idleMs = Date.now() - this.lastProgress;
    if (idleMs < this.w.stallMs) return null;
    const workers: string[] = [];
    for await (const k of await this.w.workersKv.keys()) workers.push(k);
    const why = workers.length === 0
      ? 'no live workers (none has a heartbeat in the aq-workers bucket)'
      : `${workers.length} live worker(s); ${info.num_pending} task(s) queued and ${info.num_ack_pending} in flight on the shared consumer`;
    return new JobStalledError(`job ${jobId} made no progress for ${Math.round(idleMs / 1000)} s (${done}/${this.w.layers} layers staged): ${why}`);
  }
}
