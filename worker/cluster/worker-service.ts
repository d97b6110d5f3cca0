// `arrowquant worker`: pulls layer tasks from the shared JetStream consumer, up to
// `concurrency` at a time, keeps long layers alive with in-progress acks, reads the layer's
// bytes straight from the model file when it lies under one of its model roots (else
// downloads them from the coordinator if the task allows it, else refuses), quantizes with the
// local thread pool, uploads the shard over gRPC, and only then acks. Measure tasks (their own
// subject on the same stream) go to measure-task.ts. Stateless: a worker killed at any moment
// loses nothing, JetStream redelivers its tasks.

import { hostname } from 'node:os';
import { closeSync, mkdirSync, realpathSync, rmSync } from 'node:fs';
import { join, sep } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { JsMsg, KV, NatsConnection, Subscription, Consumer } from 'nats';
import { ArrowQuantError, ModelFormatError, serializeError } from '../../core/errors.js';
import { packageVersion } from '../../core/package-info.js';
import { readSafetensorsHeader } from '../../core/model/safetensors-reader.js';
import { CANCEL_ALL, TASK_STREAM, WORKER_CONSUMER, eventsSubject, failureKey, isMeasureSubject, layerKey, refusalKey } from '../../core/cluster/names.js';
import { cancelMessageSchema, decodeMessage, encodeMessage, taskMessageSchema, type TaskMessage, type WorkerEvent, type WorkerInfo } from '../../core/cluster/messages.js';
import { connectNats, type NatsOptions } from '../../core/cluster/nats-options.js';
import { ensureTaskQueue, jobsBucket, taskQueueSettings, workersBucket } from '../../core/cluster/jetstream-setup.js';
import type { LayerTask } from '../../core/job/layer-task.js';
import { TaskRefusedError } from '../../core/cluster/errors.js';
import type { ClientTlsOptions } from '../../core/grpc/tls.js';
import { LayerRunner } from '../layer-runner.js';
import { encodeShardChunks } from '../../core/format/arrow-file.js';
import { ThreadPool } from '../thread-pool.js';
import { ShardClient } from './shard-client.js';
import { ShardClients } from './shard-clients.js';
import { ShardTransferError } from '../../core/grpc/errors.js';
import type { WorkerLayerEvent } from './worker-metrics.js';
import { heldJob, type HeldJob } from '../../core/cluster/job-lease-state.js';
import { handleMeasureTask, type MeasureTaskHost } from './measure-task.js';
import { boundEvent, checkCoordinator, checkTaskSize, taskIdentity } from './task-guard.js';
import { openRegularFileSync } from '../../core/model/open-regular.js';
import { bounded, closeNats } from '../../core/cluster/bounded.js';
import type { Timings } from '../../core/model/row-reader.js';

export interface WorkerServiceOptions {
  nats: NatsOptions;
  concurrency: number;
  threads: number;
  modelRoots: string[];
  /** where shards and downloaded tensors are kept while in flight */
  workDir: string;
  /** the worker's gRPC TLS; it alone decides the transport (a task cannot turn TLS off) */
  grpcTls?: ClientTlsOptions | null;
  /** coordinator hosts this worker talks to (default: loopback without TLS, any verified host with TLS) */
  allowCoordinators?: string[];
  /** download tensors from coordinators of jobs that allow it (off: files outside the model roots are refused) */
  allowDownload?: boolean;
  /** the work dir is this worker's own (the default): removed on stop */
  ownWorkDir?: boolean;
  /** told when the NATS connection goes and comes back (the health service follows it) */
  onConnection?: (connected: boolean) => void;
  id?: string;
  log?: (line: string) => void;
  /** each task's outcome, for metrics */
  onLayer?: (e: WorkerLayerEvent) => void;
}

const HEARTBEAT_MS = 5_000;
/** How long a finished layer's upload is retried before the task is released. */
const UPLOAD_RETRY_MS = 30_000;
/** How long the coordinator's address read at a task's start is used without reading the job state again. */
const COORDINATOR_FRESH_MS = 2_000;

export class WorkerService {
  readonly id: string;
  private nc!: NatsConnection;
  private pool!: ThreadPool;
  private runner!: LayerRunner;
  private workers!: KV;
  private jobs!: KV;
  private consumer!: Consumer;
  private cancelSub!: Subscription;
  /** The worker's own TLS configuration decides the transport, whatever the task says. */
  private readonly clients = new ShardClients((address) => new ShardClient(address, this.opts.grpcTls ?? null));
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
    this.pool = await ThreadPool.start(this.opts.threads, { onShrink: (m) => this.log(`worker ${this.id}: warning: ${m}`) });
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
      if (s.type === 'disconnect' || s.type === 'reconnect') {
        this.log(`worker ${this.id}: NATS ${s.type} (${s.data})`);
        this.opts.onConnection?.(s.type === 'reconnect');
      }
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
    // A lane quantizes its next layer while the previous one uploads (one upload at a time; a
    // task's acknowledgement and report no longer hold up the next upload).
    let uploading: Promise<void> = Promise.resolve();
    const running = new Set<Promise<void>>();
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
      let quantized!: () => void;
      const computed = new Promise<void>((resolve) => (quantized = resolve));
      let uploaded!: () => void;
      const sent = new Promise<void>((resolve) => (uploaded = resolve));
      // handle() reports its own failures; a rejection here must not fail the next layer
      const handled = this.handle(msg, uploading, quantized, uploaded)
        .catch((e: Error) => this.log(`worker ${this.id}: lane ${n}: ${e.message}`))
        .finally(() => {
          quantized();
          uploaded();
          running.delete(handled);
        });
      running.add(handled);
      uploading = sent;
      await computed;
    }
    await Promise.all(running);
  }

  /**
   * `previous` is the lane's upload in flight; `quantized` is called once this layer's row is
   * made, `uploaded` once its upload is over (the lane's next may start).
   */
  private async handle(msg: JsMsg, previous: Promise<void> = Promise.resolve(), quantized: () => void = () => undefined, uploaded: () => void = () => undefined): Promise<void> {
    if (isMeasureSubject(msg.subject)) return handleMeasureTask(msg, this.measureHost);
    let tm: TaskMessage;
    try {
      tm = decodeMessage(taskMessageSchema, msg.data, msg.subject);
    } catch (e) {
      return this.refuseMalformed(msg, e as Error);
    }
    const task = tm.task;
    if (msg.redelivered) this.opts.onLayer?.({ type: 'redelivered' });
    const tag = `layer ${task.layer_index} (${task.name.length > 200 ? `${task.name.slice(0, 200)}…` : task.name}) of job ${task.job_id}`;
    // Only a job some live coordinator holds is worked on; the address comes from its job state.
    const held = await this.liveJob(task.job_id, msg, tag);
    if (!held) return;
    // The task is worked on for the run holding the job now: one left queued by an earlier run that
    // was cancelled (or failed) is a rerun's work too, and only this run's cancel drops it.
    const run = held.state.run_id ?? tm.run_id;
    if (this.cancelled.has(run)) {
      msg.term();
      return;
    }
    const coordinator = held.state.coordinator || tm.coordinator;
    const coordinatorReadAt = performance.now();
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
      checkTaskSize(task, tag, this.id);
      checkCoordinator(coordinator, { tls: this.opts.grpcTls ?? null, allow: this.opts.allowCoordinators }, tag, this.id, task.name);
      if (tm.tls && !this.opts.grpcTls) {
        throw new TaskRefusedError(`worker ${this.id} refused ${tag}: its coordinator serves TLS and this worker has no gRPC TLS configured (--grpc-tls-ca)`, task.name, this.id);
      }
      const local = this.localInput(task);
      let input: LayerTask;
      if (local) {
        input = { ...task, file: local };
      } else if (tm.allow_download && this.opts.allowDownload) {
        await this.clients.use(coordinator, (c) => c.download(task.job_id, task.layer_index, downloadFile, task.byte_length));
        input = { ...task, file: downloadFile, data_start: 0 };
      } else {
        const which = !tm.allow_download ? 'the job does not allow downloading' : 'this worker was not started with --allow-download';
        throw new TaskRefusedError(
          `worker ${this.id} refused ${tag}: ${task.file} is not under its model roots (${this.roots.join(', ') || 'none'}) and ${which}`,
          task.name,
          this.id,
        );
      }
      // The channel connects while the layer is quantized (the first upload to a coordinator does not wait for it).
      this.clients.connect(coordinator);
      // The shard goes from the buffers the threads filled straight into the upload.
      const result = await this.runner.run(input);
      quantized();
      let up: { duplicate: boolean };
      try {
        // encoded while the previous upload runs: the next one starts the moment that one is over
        const chunks = await encodeShardChunks(result.record);
        await previous;
        if (this.cancelled.has(run)) {
          msg.term();
          return;
        }
        // the data's SHA-256 is the one the threads computed: the upload digest hashes only the rest
        const data = { bytes: result.record.data, sha256: result.record.data_sha256 };
        up = await this.uploadWithRetry(tm, run, { address: coordinator, readAt: coordinatorReadAt }, chunks, data, result.outcome.timings);
      } finally {
        result.release();
        uploaded();
      }
      const outcome = result.outcome;
      await msg.ackAck().catch(() => msg.ack());
      this.layersDone++;
      this.opts.onLayer?.({ type: 'done', bytesIn: task.byte_length, bytesOut: outcome.bytesOut, seconds: (performance.now() - t0) / 1000 });
      this.log(
        `worker ${this.id}: uploaded ${tag}: ${outcome.quantType} ${outcome.bytesOut} bytes in ${((performance.now() - t0) / 1000).toFixed(2)}s${up.duplicate ? ' (already staged)' : ''}`,
      );
    } catch (e) {
      await this.failed(msg, task, e, tag);
    } finally {
      clearInterval(alive);
      this.inFlight.delete(key);
      rmSync(downloadFile, { force: true });
    }
  }

  /** Terminates a task that fails validation; reported when it names a job, so that its coordinator does not wait for it forever. */
  private async refuseMalformed(msg: JsMsg, e: Error): Promise<void> {
    const why = e.message.slice(0, 1000);
    this.log(`worker ${this.id}: refusing a malformed task: ${why}`);
    // No reason text: nats-server 2.9 ignores "+TERM <reason>" and would redeliver.
    msg.term();
    const who = taskIdentity(msg.data);
    if (who) await this.reportFinal({ type: 'task_refused', ...who, worker_id: this.id, reason: `worker ${this.id} refused a malformed task for layer ${who.layer_index}: ${why}` });
  }

  /**
   * The job's state when a live coordinator holds it; otherwise the task is released for later
   * (the state cannot be read, or a lease just ran out) or dropped, and the answer is null.
   */
  private async liveJob(jobId: string, msg: JsMsg, tag: string): Promise<HeldJob | null> {
    let held;
    try {
      held = heldJob(await this.jobs.get(jobId));
    } catch (e) {
      this.log(`worker ${this.id}: cannot read the state of job ${jobId} (${(e as Error).message}); releasing ${tag}`);
      msg.nak(1_000);
      return null;
    }
    if (held?.live) return held;
    const lease = held?.state.lease_ms ?? 0;
    // A lease just run out may be a NATS outage the coordinator is reconnecting from: come back later.
    if (held && held.state.state === 'running' && held.ageMs < 4 * lease) {
      this.log(`worker ${this.id}: released ${tag}: its coordinator's lease expired ${(held.ageMs / 1000).toFixed(1)} s ago; retrying later`);
      msg.nak(lease / 2);
      return null;
    }
    msg.term();
    const why = !held ? 'no coordinator holds the job' : held.state.state !== 'running' ? `the job is ${held.state.state}` : `its coordinator's lease expired ${(held.ageMs / 1000).toFixed(1)} s ago`;
    this.log(`worker ${this.id}: dropped ${tag}: ${why}`);
    return null;
  }

  /** A task that failed: a refusal or a failure of its input is recorded and terminated, anything else redelivered. */
  private async failed(msg: JsMsg, task: LayerTask, e: unknown, tag: string): Promise<void> {
    const refused = e instanceof TaskRefusedError;
    const final = refused || (e instanceof ArrowQuantError && e.exitCode >= 2);
    this.opts.onLayer?.({ type: 'failed', outcome: refused ? 'refused' : final ? 'final' : 'retried' });
    this.log(`worker ${this.id}: ${refused ? 'refused' : 'failed'} ${tag}: ${(e as Error).message}${final ? '' : ' (will be redelivered)'}`);
    const event: WorkerEvent = refused
      ? { type: 'task_refused', job_id: task.job_id, layer_index: task.layer_index, name: task.name, worker_id: this.id, reason: (e as Error).message }
      : { type: 'layer_failed', job_id: task.job_id, layer_index: task.layer_index, name: task.name, worker_id: this.id, final, error: serializeError(e) };
    if (final) await this.reportFinal(event);
    else await this.reportRetry(event);
    if (final) msg.term();
    else msg.nak(1_000);
  }

  /** What a measure task needs of this worker (worker/cluster/measure-task.ts). */
  private get measureHost(): MeasureTaskHost {
    return {
      id: this.id, runner: this.runner, jobs: this.jobs, ackWaitMs: this.ackWaitMs, inFlight: this.inFlight, log: this.log,
      isCancelled: (runId) => this.cancelled.has(runId),
      liveJob: (jobId, msg, tag) => this.liveJob(jobId, msg, tag),
      localInput: (task) => this.localInput(task),
      refuseMalformed: (msg, e) => this.refuseMalformed(msg, e),
      failed: (msg, task, e, tag) => this.failed(msg, task, e, tag),
    };
  }

  /**
   * A final refusal or failure is first recorded in the job state, which is what the coordinator
   * trusts (an event alone can be forged or lost), then announced.
   */
  private async reportFinal(event: WorkerEvent): Promise<void> {
    const e = boundEvent(event);
    const ok = await bounded(this.jobs.put(refusalKey(e.job_id, e.layer_index), encodeMessage(e)), 5_000);
    if (!ok) this.log(`worker ${this.id}: could not record ${e.type} of layer ${e.layer_index} of job ${e.job_id} in the job state`);
    this.publishEvent(e);
  }

  /**
   * A failure to be retried is kept in the job state (the last one per layer, overwritten) before
   * the task is released: when its deliveries run out, the coordinator's error says why.
   */
  private async reportRetry(event: WorkerEvent): Promise<void> {
    const e = boundEvent(event);
    const ok = await bounded(this.jobs.put(failureKey(e.job_id, e.layer_index), encodeMessage(e)), 5_000);
    if (!ok) this.log(`worker ${this.id}: could not record the failure of layer ${e.layer_index} of job ${e.job_id} in the job state`);
    this.publishEvent(e);
  }

  /** Events are bounded in size and never throw: whatever a task holds, the worker carries on. */
  private publishEvent(event: WorkerEvent): void {
    try {
      this.nc.publish(eventsSubject(event.job_id), encodeMessage(boundEvent(event)));
    } catch (e) {
      this.log(`worker ${this.id}: could not report ${event.type} of layer ${event.layer_index} of job ${event.job_id}: ${(e as Error).message}`);
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
    // Every task: the file can have been swapped for a FIFO since its header was cached.
    try {
      closeSync(openRegularFileSync(real));
    } catch (e) {
      if (!(e instanceof ModelFormatError)) return null;
      throw new TaskRefusedError(`worker ${this.id} refused layer ${task.layer_index} (${task.name}): ${task.file} is not a regular file`, task.name, this.id);
    }
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
   * elsewhere than the one that published the task), else `fallback`; checked against the
   * worker's allowed coordinators like the first.
   */
  private async coordinatorNow(tm: TaskMessage, fallback: string): Promise<string> {
    try {
      const held = heldJob(await this.jobs.get(tm.task.job_id));
      if (held?.live && held.state.coordinator && held.state.coordinator !== fallback) {
        const tag = `layer ${tm.task.layer_index} of job ${tm.task.job_id}`;
        checkCoordinator(held.state.coordinator, { tls: this.opts.grpcTls ?? null, allow: this.opts.allowCoordinators }, tag, this.id, tm.task.name);
        return held.state.coordinator;
      }
    } catch (e) {
      if (e instanceof TaskRefusedError) throw e;
    }
    return fallback;
  }

  /**
   * Upload, retrying transient failures for a while (the coordinator may be restarting) so that a
   * finished layer is not quantized again; the task stays alive meanwhile.
   */
  private async uploadWithRetry(
    tm: TaskMessage, run: string, known: { address: string; readAt: number }, shard: readonly Uint8Array[], data: { bytes: Uint8Array; sha256: string }, t: Timings,
  ): Promise<{ duplicate: boolean }> {
    const coordinator = known.address;
    const header = {
      job_id: tm.task.job_id, layer_index: tm.task.layer_index, plan_hash: tm.task.plan_hash, worker_id: this.id,
      kernel: this.pool.kernel, threads: this.pool.size, read_ms: t.readMs, kernel_ms: t.kernelMs, hash_ms: t.hashMs, write_ms: t.writeMs,
    };
    const deadline = Date.now() + UPLOAD_RETRY_MS;
    for (let attempt = 0; ; attempt++) {
      try {
        // The address read from the job state when the task began is used while it is fresh; a retry, or a long layer, reads it again.
        const fresh = attempt === 0 && performance.now() - known.readAt < COORDINATOR_FRESH_MS;
        const address = fresh ? coordinator : await this.coordinatorNow(tm, coordinator);
        return await this.clients.use(address, (c) => c.upload(header, shard, data));
      } catch (e) {
        const retryable = e instanceof ShardTransferError && e.retryable;
        if (!retryable || Date.now() > deadline || this.stopping || this.cancelled.has(run)) throw e;
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
    // NATS may be unreachable: nothing below waits on it for more than a few seconds.
    if (this.workers) await bounded(this.workers.delete(this.id.replace(/[^\w-]/g, '_')), 2_000);
    this.clients.closeAll();
    await this.pool?.close();
    if (this.nc) await closeNats(this.nc);
    if (this.opts.ownWorkDir) rmSync(this.opts.workDir, { recursive: true, force: true });
  }
}
