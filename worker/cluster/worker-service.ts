// `arrowquant worker`: pulls layer tasks from the shared JetStream consumer, up to
// `concurrency` at a time, keeps long layers alive with in-progress acks, reads the layer's
// bytes straight from the model file when it lies under one of its model roots (else
// downloads them from the coordinator if the task allows it, else refuses), quantizes with the
// local thread pool, uploads the shard over gRPC, and only then acks. Stateless: a worker killed
// at any moment loses nothing, JetStream redelivers its tasks.

import { hostname } from 'node:os';
import { mkdirSync, realpathSync, rmSync } from 'node:fs';
import { join, sep } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { JsMsg, KV, NatsConnection, Subscription, Consumer } from 'nats';
import { ArrowQuantError, serializeError } from '../../core/errors.js';
import { packageVersion } from '../../core/package-info.js';
import { readSafetensorsHeader } from '../../core/model/safetensors-reader.js';
import { CANCEL_ALL, TASK_STREAM, WORKER_CONSUMER, eventsSubject, layerKey } from '../../core/cluster/names.js';
import { cancelMessageSchema, decodeMessage, encodeMessage, jobStateSchema, taskMessageSchema, type TaskMessage, type WorkerEvent, type WorkerInfo } from '../../core/cluster/messages.js';
import { connectNats, type NatsOptions } from '../../core/cluster/nats-options.js';
import { ensureTaskQueue, jobsBucket, taskQueueSettings, workersBucket } from '../../core/cluster/jetstream-setup.js';
import type { LayerTask } from '../../core/job/layer-task.js';
import { TaskRefusedError } from '../../core/cluster/errors.js';
import type { ClientTlsOptions } from '../../core/grpc/tls.js';
import { LayerRunner } from '../layer-runner.js';
import { encodeShardChunks } from '../../core/format/arrow-file.js';
import { ThreadPool } from '../thread-pool.js';
import { ShardClient } from './shard-client.js';
import { ShardTransferError } from '../../core/grpc/errors.js';
import type { WorkerLayerEvent } from './worker-metrics.js';

export interface WorkerServiceOptions {
  nats: NatsOptions;
  concurrency: number;
  threads: number;
  modelRoots: string[];
  /** where shards and downloaded tensors are kept while in flight */
  workDir: string;
  grpcTls?: ClientTlsOptions | null;
  id?: string;
  log?: (line: string) => void;
  /** each task's outcome, for metrics */
  onLayer?: (e: WorkerLayerEvent) => void;
}

const HEARTBEAT_MS = 5_000;
/** How long a finished layer's upload is retried before the task is released. */
const UPLOAD_RETRY_MS = 30_000;

export class WorkerService {
  readonly id: string;
  private nc!: NatsConnection;
  private pool!: ThreadPool;
  private runner!: LayerRunner;
  private workers!: KV;
  private jobs!: KV;
  private consumer!: Consumer;
  private cancelSub!: Subscription;
  private readonly clients = new Map<string, ShardClient>();
  private readonly cancelled = new Set<string>();
  private readonly roots: string[];
  private readonly headerCache = new Map<string, Map<string, { dataStart: number; byteLength: number; dtype: string; shape: number[] }>>();
  private stopping = false;
  private inFlight = new Map<string, JsMsg>();
  private lanes: Promise<void>[] = [];
  private heartbeat: NodeJS.Timeout | null = null;
  private ackWaitMs = 30_000;
  private readonly started = new Date().toISOString();
  layersDone = 0;
  get inFlightCount(): number {
    return this.inFlight.size;
  }
  private readonly log: (line: string) => void;

  private constructor(private readonly opts: WorkerServiceOptions) {
    this.id = opts.id ?? `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
    this.log = opts.log ?? ((l) => process.stderr.write(`${l}\n`));
    this.roots = opts.modelRoots.map((r) => {
      try {
        return realpathSync(r);
      } catch {
        throw new ArrowQuantError(`--model-root ${r} does not exist`);
      }
    });
  }

  static async start(opts: WorkerServiceOptions): Promise<WorkerService> {
    const w = new WorkerService(opts);
    try {
      await w.init();
    } catch (e) {
      await w.stop(0);
      throw e;
    }
    return w;
  }

  private async init(): Promise<void> {
    mkdirSync(this.opts.workDir, { recursive: true });
    this.nc = await connectNats(this.opts.nats);
    void this.watchConnection();
    this.pool = await ThreadPool.start(this.opts.threads);
    if (this.pool.kernelWarning) this.log(`worker ${this.id}: warning: ${this.pool.kernelWarning}`);
    this.runner = new LayerRunner(this.pool);
    const settings = taskQueueSettings();
    await ensureTaskQueue(this.nc, settings);
    const info = await (await this.nc.jetstreamManager()).consumers.info(TASK_STREAM, WORKER_CONSUMER);
    this.ackWaitMs = Math.max(1000, (info.config.ack_wait ?? 30e9) / 1e6);
    this.consumer = await this.nc.jetstream().consumers.get(TASK_STREAM, WORKER_CONSUMER);
    this.workers = await workersBucket(this.nc);
    this.jobs = await jobsBucket(this.nc);
    this.cancelSub = this.nc.subscribe(CANCEL_ALL, {
      callback: (_err, m) => {
        try {
          const { run_id } = decodeMessage(cancelMessageSchema, m.data, m.subject);
          if (!run_id) return; // addressed to the coordinator, which answers with its run id
          this.cancelled.add(run_id);
          this.log(`worker ${this.id}: job ${m.subject.split('.').pop()} (run ${run_id}) cancelled`);
        } catch (e) {
          this.log(`worker ${this.id}: ignoring ${(e as Error).message}`);
        }
      },
    });
    await this.publishInfo();
    this.heartbeat = setInterval(() => void this.publishInfo().catch(() => undefined), HEARTBEAT_MS);
    this.lanes = Array.from({ length: this.opts.concurrency }, (_, i) => this.lane(i));
    this.log(`worker ${this.id}: ready (kernel ${this.pool.kernel}, ${this.pool.size} threads, concurrency ${this.opts.concurrency}, model roots ${this.roots.join(', ') || 'none'})`);
  }

  private async watchConnection(): Promise<void> {
    for await (const s of this.nc.status()) {
      if (s.type === 'disconnect' || s.type === 'reconnect') this.log(`worker ${this.id}: NATS ${s.type} (${s.data})`);
    }
  }

  private info(): WorkerInfo {
    return {
      id: this.id, host: hostname(), pid: process.pid, version: packageVersion(), kernel: this.pool.kernel, threads: this.pool.size,
      concurrency: this.opts.concurrency, in_flight: this.inFlight.size, layers_done: this.layersDone, model_roots: this.roots, started_at: this.started,
    };
  }

  private async publishInfo(): Promise<void> {
    await this.workers.put(this.id.replace(/[^\w-]/g, '_'), encodeMessage(this.info()));
  }

  private async lane(n: number): Promise<void> {
    while (!this.stopping) {
      let msg: JsMsg | null;
      try {
        msg = await this.consumer.next({ expires: 2_000 });
      } catch (e) {
        if (this.stopping) break;
        this.log(`worker ${this.id}: lane ${n}: pulling failed (${(e as Error).message}); retrying`);
        await new Promise((r) => setTimeout(r, 500));
        continue;
      }
      if (!msg) continue;
      if (this.stopping) {
        msg.nak();
        break;
      }
      await this.handle(msg);
    }
  }

  private async handle(msg: JsMsg): Promise<void> {
    let tm: TaskMessage;
    try {
      tm = decodeMessage(taskMessageSchema, msg.data, msg.subject);
    } catch (e) {
      this.log(`worker ${this.id}: refusing a malformed task: ${(e as Error).message}`);
      // No reason text: nats-server 2.9 ignores "+TERM <reason>" and would redeliver.
      msg.term();
      return;
    }
    const task = tm.task;
    if (msg.redelivered) this.opts.onLayer?.({ type: 'redelivered' });
    const tag = `layer ${task.layer_index} (${task.name}) of job ${task.job_id}`;
    if (this.cancelled.has(tm.run_id)) {
      msg.term();
      return;
    }
    if (await this.alreadyStaged(task)) {
      await msg.ackAck().catch(() => msg.ack());
      this.log(`worker ${this.id}: skipped ${tag}: its shard is already staged`);
      return;
    }
    const key = `${task.job_id}/${task.layer_index}`;
    this.inFlight.set(key, msg);
    const alive = setInterval(() => msg.working(), Math.max(250, this.ackWaitMs / 3));
    const downloadFile = join(this.opts.workDir, `${task.job_id}-${task.layer_index}-${process.pid}.tensor`);
    const t0 = performance.now();
    try {
      const local = this.localInput(task);
      let input: LayerTask;
      if (local) {
        input = { ...task, file: local };
      } else if (tm.allow_download) {
        await (await this.clientFor(tm)).download(task.job_id, task.layer_index, downloadFile, task.byte_length);
        input = { ...task, file: downloadFile, data_start: 0 };
      } else {
        throw new TaskRefusedError(
          `worker ${this.id} refused ${tag}: ${task.file} is not under its model roots (${this.roots.join(', ') || 'none'}) and the task does not allow downloading`,
          task.name,
          this.id,
        );
      }
      // The shard goes from the buffers the threads filled straight into the upload.
      const result = await this.runner.run(input);
      let up: { duplicate: boolean };
      try {
        if (this.cancelled.has(tm.run_id)) {
          msg.term();
          return;
        }
        up = await this.uploadWithRetry(tm, await encodeShardChunks(result.record));
      } finally {
        result.release();
      }
      const outcome = result.outcome;
      await msg.ackAck().catch(() => msg.ack());
      this.layersDone++;
      this.opts.onLayer?.({ type: 'done', bytesIn: task.byte_length, bytesOut: outcome.bytesOut, seconds: (performance.now() - t0) / 1000 });
      this.log(
        `worker ${this.id}: uploaded ${tag}: ${outcome.quantType} ${outcome.bytesOut} bytes in ${((performance.now() - t0) / 1000).toFixed(2)}s${up.duplicate ? ' (already staged)' : ''}`,
      );
    } catch (e) {
      const refused = e instanceof TaskRefusedError;
      const final = refused || (e instanceof ArrowQuantError && e.exitCode >= 2);
      this.opts.onLayer?.({ type: 'failed', outcome: refused ? 'refused' : final ? 'final' : 'retried' });
      this.log(`worker ${this.id}: ${refused ? 'refused' : 'failed'} ${tag}: ${(e as Error).message}${final ? '' : ' (will be redelivered)'}`);
      const event: WorkerEvent = refused
        ? { type: 'task_refused', job_id: task.job_id, layer_index: task.layer_index, name: task.name, worker_id: this.id, reason: (e as Error).message }
        : { type: 'layer_failed', job_id: task.job_id, layer_index: task.layer_index, name: task.name, worker_id: this.id, final, error: serializeError(e) };
      this.nc.publish(eventsSubject(task.job_id), encodeMessage(event));
      if (final) msg.term();
      else msg.nak(1_000);
    } finally {
      clearInterval(alive);
      this.inFlight.delete(key);
      rmSync(downloadFile, { force: true });
    }
  }

  /** A redelivered task whose layer the coordinator already has (it restarted after staging it). */
  private async alreadyStaged(task: LayerTask): Promise<boolean> {
    try {
      const e = await this.jobs.get(layerKey(task.job_id, task.layer_index));
      return !!e && e.value.length > 0;
    } catch {
      return false;
    }
  }

  /**
   * The task's file as this worker may read it: under a model root (symlinks resolved), and
   * holding the named tensor at exactly the task's byte range, or null.
   */
  private localInput(task: LayerTask): string | null {
    let real: string;
    try {
      real = realpathSync(task.file);
    } catch {
      return null;
    }
    if (!this.roots.some((r) => real === r || real.startsWith(r.endsWith(sep) ? r : r + sep))) return null;
    let tensors = this.headerCache.get(real);
    if (!tensors) {
      tensors = new Map(readSafetensorsHeader(real).tensors.map((t) => [t.name, t]));
      this.headerCache.set(real, tensors);
    }
    const t = tensors.get(task.name);
    if (!t || t.dataStart !== task.data_start || t.byteLength !== task.byte_length || t.dtype !== task.dtype || t.shape.join() !== task.shape.join()) {
      throw new TaskRefusedError(`worker ${this.id} refused layer ${task.layer_index} (${task.name}): the task does not match the tensor in ${task.file}`, task.name, this.id);
    }
    return real;
  }

  /**
   * The job's coordinator as the job state names it now (a restarted coordinator listens
   * elsewhere than the one that published the task), else the task's.
   */
  private async clientFor(tm: TaskMessage): Promise<ShardClient> {
    let address = tm.coordinator;
    try {
      const e = await this.jobs.get(tm.task.job_id);
      if (e && e.value.length) {
        const state = decodeMessage(jobStateSchema, e.value, 'job state');
        if (state.state === 'running' && state.coordinator) address = state.coordinator;
      }
    } catch {
      /* the task's address */
    }
    let c = this.clients.get(address);
    if (!c) {
      c = new ShardClient(address, tm.tls ? (this.opts.grpcTls ?? {}) : null);
      this.clients.set(address, c);
    }
    return c;
  }

  /**
   * Upload, retrying transient failures for a while (the coordinator may be restarting) so that a
   * finished layer is not quantized again; the task stays alive meanwhile.
   */
  private async uploadWithRetry(tm: TaskMessage, shard: readonly Uint8Array[]): Promise<{ duplicate: boolean }> {
    const header = { job_id: tm.task.job_id, layer_index: tm.task.layer_index, plan_hash: tm.task.plan_hash, worker_id: this.id };
    const deadline = Date.now() + UPLOAD_RETRY_MS;
    for (let attempt = 0; ; attempt++) {
      try {
        return await (await this.clientFor(tm)).upload(header, shard);
      } catch (e) {
        const retryable = e instanceof ShardTransferError && e.retryable;
        if (!retryable || Date.now() > deadline || this.stopping || this.cancelled.has(tm.run_id)) throw e;
        if (attempt === 0) this.log(`worker ${this.id}: upload of layer ${tm.task.layer_index} of job ${tm.task.job_id} failed (${(e as Error).message}); retrying`);
        await new Promise((r) => setTimeout(r, Math.min(4_000, 250 * 2 ** attempt)));
      }
    }
  }

  /**
   * Graceful stop: no new tasks; in-flight ones get `graceMs` to finish, then are released
   * (nak) for another worker.
   */
  async stop(graceMs = 30_000): Promise<void> {
    this.stopping = true;
    const drained = Promise.all(this.lanes);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([drained.then(() => false), new Promise<boolean>((r) => (timer = setTimeout(() => r(true), graceMs)))]);
    clearTimeout(timer);
    if (timedOut) for (const m of this.inFlight.values()) m.nak();
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.cancelSub?.unsubscribe();
    await this.workers?.delete(this.id.replace(/[^\w-]/g, '_')).catch(() => undefined);
    for (const c of this.clients.values()) c.close();
    await this.pool?.close();
    await this.nc?.drain().catch(() => undefined);
  }
}
