// The measured allocation's measurements on the cluster's workers: one measure task per
// (layer, group size, encoding, widths) on the job's task stream, the worker's four sums per width
// read back from the job state (a key-value watch, and a read of every outstanding key each tick
// in case a watch update was lost). Every wait ends: a final refusal or failure a worker recorded,
// the max-deliveries advisory, a queue holding none of the outstanding tasks any more, no result
// for the stall timeout, a lost lease or a cancel — each with an error naming the layer or what was
// waited for; the coordinator's own NATS calls are retried for 30 s while NATS restarts.

import type { KV, KvEntry, NatsConnection, QueuedIterator, Subscription } from 'nats';
import { JobCancelledError } from '../../core/errors.js';
import { DeliveriesExhaustedError, JobStalledError, MalformedMessageError, NatsConnectionError } from '../../core/cluster/errors.js';
import { cancelMessageSchema, decodeMessage, encodeMessage, workerEventSchema } from '../../core/cluster/messages.js';
import {
  measureId, measureMessageSchema, measureResultSchema, resultStats, taskEncoding, type MeasureMessage,
} from '../../core/cluster/measure-messages.js';
import {
  TASK_STREAM, WORKER_CONSUMER, cancelSubject, eventsSubject, isMeasureSubject, maxDeliveriesAdvisory, measureKey, measureKeys,
  measureMessageId, measureSubject, refusalKeys,
} from '../../core/cluster/names.js';
import type { LayerTask } from '../../core/job/layer-task.js';
import type { LayerStats } from '../../core/quant/layer-stats.js';
import type { QuantBits } from '../../core/quant/reference.js';
import type { LayerMeasurer } from '../layer-measurements.js';
import { subscribeDecoded } from '../../core/cluster/subscribe-decoded.js';
import { recordedFailure, stallReason } from './stall-detector.js';

export interface ClusterMeasurerOptions {
  nc: NatsConnection;
  /** the aq-jobs bucket */
  kv: KV;
  workersKv: KV;
  jobId: string;
  runId: string;
  /** no result for this long fails the measurement, saying why */
  stallMs: number;
  log: (line: string) => void;
  cancel?: Promise<void>;
}

interface Outstanding {
  task: LayerTask;
  widths: readonly QuantBits[];
  id: string;
  /** what an earlier run left has been looked at: from now on a result is this run's answer */
  asked: boolean;
  /** its task is in the stream (the queue check counts only these) */
  published: boolean;
  resolve: (stats: Map<QuantBits, LayerStats>) => void;
}

/** How long a NATS call of the measurement is retried (NATS may be restarting) before the job fails. */
const NATS_RETRY_MS = 30_000;

const label = (t: LayerTask) => `layer ${t.layer_index} (${t.name.length > 80 ? `${t.name.slice(0, 80)}…` : t.name}) at group size ${t.group_size}, ${taskEncoding(t)}`;

export class ClusterMeasurer implements LayerMeasurer {
  /** measure tasks this run published (each run on a worker), the widths they measured, and results an earlier run of the job left */
  readonly counts = { published: 0, widths: 0, reused: 0 };
  private readonly outstanding = new Map<string, Outstanding>();
  /** per layer, what a worker last reported failing it with (a retryable failure, from its event) */
  private readonly lastErrors = new Map<number, string>();
  private failure: Error | null = null;
  private rejectFailed!: (e: Error) => void;
  private readonly failed = new Promise<never>((_, reject) => (this.rejectFailed = reject));
  private readonly subs: Subscription[] = [];
  private watch: QueuedIterator<KvEntry> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private lastProgress = Date.now();
  private emptyTicks = 0;
  private busy = false;

  private constructor(private readonly o: ClusterMeasurerOptions) {
    this.failed.catch(() => undefined); // observed by every measure() that races it
  }

  static async start(o: ClusterMeasurerOptions): Promise<ClusterMeasurer> {
    const m = new ClusterMeasurer(o);
    try {
      await m.listen();
    } catch (e) {
      m.close();
      throw e;
    }
    return m;
  }

  async measure(task: LayerTask, widths: readonly QuantBits[]): Promise<Map<QuantBits, LayerStats>> {
    if (this.failure) throw this.failure;
    const { nc, jobId, runId } = this.o;
    const key = measureKey(jobId, task.layer_index, taskEncoding(task), task.group_size);
    if (this.outstanding.has(key)) throw new Error(`${label(task)} is already being measured`);
    const msg: MeasureMessage = { task, widths: [...widths], measure_id: measureId(task, widths), run_id: runId };
    const data = this.travels(msg);
    const result = new Promise<Map<QuantBits, LayerStats>>((resolve) => this.outstanding.set(key, { task, widths, id: msg.measure_id, asked: false, published: false, resolve }));
    // A run killed while measuring leaves its results: the same question needs no task.
    const earlier = await this.retrying(`reading ${key}`, () => this.o.kv.get(key));
    if (earlier && earlier.operation === 'PUT' && earlier.value.length) await this.takeLeftover(key, earlier.value);
    const o = this.outstanding.get(key);
    if (!o) this.counts.reused++; // answered by that read
    else if (!this.failure) {
      o.asked = true;
      // de-duplicated by its message id: publishing again after a lost answer queues it once
      const msgID = measureMessageId(jobId, task.layer_index, msg.measure_id, runId);
      await this.retrying(`publishing the measure task of ${label(task)}`, () => nc.jetstream().publish(measureSubject(jobId), data, { msgID }));
      o.published = true;
      this.counts.published++;
      this.counts.widths += widths.length;
    }
    return Promise.race([result, this.failed]);
  }

  /** A NATS call retried while NATS may be restarting, for at most NATS_RETRY_MS or until the measurement has failed. */
  private async retrying<T>(what: string, call: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + NATS_RETRY_MS;
    for (let attempt = 0; ; attempt++) {
      try {
        return await call();
      } catch (e) {
        if (this.failure) throw this.failure;
        const why = (e as Error).message;
        if (Date.now() > deadline) throw new NatsConnectionError(`${what} failed for ${NATS_RETRY_MS / 1000} s: ${why}`, [this.o.nc.getServer()], { cause: e });
        if (attempt === 0) this.o.log(`coordinator: ${what} failed (${why}); retrying`);
        await new Promise((r) => setTimeout(r, Math.min(2_000, 100 * 2 ** attempt)));
      }
    }
  }

  /** Stop listening; results still outstanding are not waited for. */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    for (const s of this.subs) s.unsubscribe();
    this.watch?.stop();
  }

  /** Remove this job's results from the job state (they are in the plan, and in the measurement cache). */
  async forget(): Promise<void> {
    const keys: string[] = [];
    for await (const k of await this.o.kv.keys(measureKeys(this.o.jobId))) keys.push(k);
    for (const k of keys) await this.o.kv.delete(k);
  }

  /** Ends the measurement with `e` (the job's lease was lost, say): every measure() waiting rejects with it. */
  fail(e: Error): void {
    if (this.failure) return;
    this.failure = e;
    this.rejectFailed(e);
  }

  /** The message as it goes on the stream, checked against the schema workers use and the server's payload limit. */
  private travels(msg: MeasureMessage): Uint8Array {
    const r = measureMessageSchema.safeParse(msg);
    const at = `${label(msg.task)} cannot be measured on cluster workers`;
    if (!r.success) {
      const i = r.error.issues[0]!;
      throw new MalformedMessageError(`${at}: ${i.path.join('.')}: ${i.message} (quantize it locally, without --nats)`, measureSubject(this.o.jobId));
    }
    const data = encodeMessage(msg);
    const max = this.o.nc.info?.max_payload ?? 1024 * 1024;
    if (data.byteLength > max) {
      throw new MalformedMessageError(`${at}: its measure task is ${data.byteLength} bytes, over the NATS server's max_payload of ${max} (quantize it locally, without --nats)`, measureSubject(this.o.jobId));
    }
    return data;
  }

  /** The sums a result holds for an outstanding key; null for another question's answer; why it cannot be read. */
  private read(key: string, value: Uint8Array): Map<QuantBits, LayerStats> | null | string {
    const o = this.outstanding.get(key);
    if (!o || !value.length) return null;
    try {
      const r = decodeMessage(measureResultSchema, value, `job state ${key}`);
      if (r.measure_id !== o.id) return null; // another question's answer (a different plan of the same job id)
      const stats = resultStats(r, o.widths);
      return typeof stats === 'string' ? `result in job state ${key}: ${stats}` : stats;
    } catch (e) {
      return (e as Error).message;
    }
  }

  private answer(key: string, stats: Map<QuantBits, LayerStats>): void {
    const o = this.outstanding.get(key)!;
    this.outstanding.delete(key);
    this.lastProgress = Date.now();
    o.resolve(stats);
  }

  /** A result written after the task was published: one that cannot be read fails the measurement (and is removed, so that a new run asks again). */
  private accept(key: string, value: Uint8Array): void {
    if (!this.outstanding.get(key)?.asked) return; // measure() is still looking at what an earlier run left
    const stats = this.read(key, value);
    if (stats instanceof Map) return this.answer(key, stats);
    if (typeof stats !== 'string') return;
    void this.o.kv.delete(key).catch(() => undefined);
    this.fail(new MalformedMessageError(`measurement of ${label(this.outstanding.get(key)!.task)}: ${stats}`, key));
  }

  /** A result an earlier run left: taken when it answers the question; one that cannot be read is removed and the question asked again. */
  private async takeLeftover(key: string, value: Uint8Array): Promise<void> {
    const stats = this.read(key, value);
    if (stats instanceof Map) return this.answer(key, stats);
    if (typeof stats !== 'string') return;
    await this.retrying(`removing ${key}`, () => this.o.kv.delete(key));
    this.o.log(`coordinator: ignoring an unreadable measurement of ${label(this.outstanding.get(key)!.task)} left in the job state (${stats}); measuring it again`);
  }

  private outstandingLayer(layer: number): Outstanding | undefined {
    for (const o of this.outstanding.values()) if (o.task.layer_index === layer) return o;
    return undefined;
  }

  private async listen(): Promise<void> {
    const { nc, kv, jobId, log } = this.o;
    this.watch = await kv.watch({ key: measureKeys(jobId), ignoreDeletes: true });
    void (async () => {
      for await (const e of this.watch!) if (e.operation === 'PUT') this.accept(e.key, e.value);
    })().catch((e: Error) => log(`coordinator: watching the measurement results stopped (${e.message}); reading them every tick instead`));
    this.subs.push(
      subscribeDecoded(nc, eventsSubject(jobId), workerEventSchema, log, (ev) => {
        const o = this.outstandingLayer(ev.layer_index);
        if (!o) return;
        if (ev.type === 'task_refused' || ev.final) void this.checkRecorded(ev.layer_index);
        else {
          this.lastErrors.set(ev.layer_index, ev.error.message.slice(0, 500));
          log(`coordinator: worker ${ev.worker_id} failed measuring ${label(o.task)}; it will be redelivered: ${ev.error.message}`);
        }
      }),
      subscribeDecoded(nc, cancelSubject(jobId), cancelMessageSchema, log, (c) => {
        if (!c.run_id) this.fail(new JobCancelledError(jobId));
      }),
      nc.subscribe(maxDeliveriesAdvisory, { callback: (_e, m) => void this.onMaxDeliveries(m.data) }),
    );
    this.o.cancel?.then(() => this.fail(new JobCancelledError(jobId)));
    const tick = Math.max(200, Math.min(5_000, this.o.stallMs / 4));
    this.timer = setInterval(() => void this.check(), tick);
  }

  /** A final failure counts only as the worker recorded it in the job state (an event alone can be forged). */
  private async checkRecorded(layer: number): Promise<void> {
    try {
      const err = await recordedFailure(this.o.kv, this.o.jobId, layer);
      if (err && this.outstandingLayer(layer)) this.fail(err);
    } catch (e) {
      this.o.log(`coordinator: cannot check a failure of layer ${layer}: ${(e as Error).message}`);
    }
  }

  private async onMaxDeliveries(data: Uint8Array): Promise<void> {
    try {
      const adv = JSON.parse(new TextDecoder().decode(data)) as { stream_seq?: number; deliveries?: number };
      if (!adv.stream_seq) return;
      const sm = await (await this.o.nc.jetstreamManager()).streams.getMessage(TASK_STREAM, { seq: adv.stream_seq });
      if (!isMeasureSubject(sm.subject) || sm.subject !== measureSubject(this.o.jobId)) return;
      const mm = decodeMessage(measureMessageSchema, sm.data, sm.subject);
      const o = this.outstanding.get(measureKey(this.o.jobId, mm.task.layer_index, taskEncoding(mm.task), mm.task.group_size));
      if (!o || o.id !== mm.measure_id || mm.run_id !== this.o.runId) return;
      const last = this.lastErrors.get(o.task.layer_index);
      this.fail(new DeliveriesExhaustedError(
        `measuring ${label(o.task)} failed ${adv.deliveries ?? 'the maximum number of'} deliveries${last ? ` (the last: ${last})` : ''}; see the workers' logs`, o.task.name, adv.deliveries ?? 0,
      ));
    } catch (e) {
      this.o.log(`coordinator: could not read a max-deliveries advisory: ${(e as Error).message}`);
    }
  }

  private async check(): Promise<void> {
    if (this.busy || this.failure) return;
    this.busy = true;
    try {
      const err = await this.verdict();
      if (err) this.fail(err);
    } catch {
      // NATS unreachable: the next tick looks again
    } finally {
      this.busy = false;
    }
  }

  private async verdict(): Promise<Error | null> {
    const { kv, jobId } = this.o;
    if (this.outstanding.size === 0) {
      this.lastProgress = Date.now();
      this.emptyTicks = 0;
      return null;
    }
    for (const key of [...this.outstanding.keys()]) {
      const e = await kv.get(key);
      if (e && e.operation === 'PUT') this.accept(key, e.value);
    }
    for await (const k of await kv.keys(refusalKeys(jobId))) {
      const layer = Number(k.slice(k.lastIndexOf('.') + 1));
      if (!this.outstandingLayer(layer)) continue;
      const err = await recordedFailure(kv, jobId, layer);
      if (err) return err;
    }
    const waiting = [...this.outstanding.values()].filter((o) => o.published);
    const info = await (await this.o.nc.jetstreamManager()).consumers.info(TASK_STREAM, WORKER_CONSUMER);
    // Nothing of any job is queued or in flight, yet results are missing: their tasks are gone.
    this.emptyTicks = waiting.length > 0 && info.num_pending === 0 && info.num_ack_pending === 0 ? this.emptyTicks + 1 : 0;
    if (this.emptyTicks >= 2) {
      const list = waiting.slice(0, 5).map((o) => label(o.task)).join('; ') + (waiting.length > 5 ? '; …' : '');
      return new DeliveriesExhaustedError(
        `job ${jobId}: ${waiting.length} measurement(s) missing (${list}) and none of their tasks is queued or in flight any more (deliveries exhausted); see the workers' logs`,
        waiting[0]!.task.name, 0,
      );
    }
    const idleMs = Date.now() - this.lastProgress;
    if (idleMs < this.o.stallMs) return null;
    const why = await stallReason(this.o.workersKv, info);
    return new JobStalledError(
      `job ${jobId}: no measurement result from the workers for ${Math.round(idleMs / 1000)} s (${this.outstanding.size} outstanding, e.g. ${label([...this.outstanding.values()][0]!.task)}): ${why}`,
    );
  }
}
