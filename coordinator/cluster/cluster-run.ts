// `arrowquant quantize … --nats URL`: this process is the job's coordinator. It plans exactly as
// the local run does, publishes one task per layer on the work-queue stream (de-duplicated by
// <job>/<layer>/<plan-hash>), receives shards over gRPC, records each in the job's key-value
// state, and merges them in canonical order into the same file the local run writes. A shard
// that is next in order when it arrives goes straight into the partial output (its one write);
// any other is staged in a directory keyed by the job id (and kept in the reorder window until
// its turn). Killed and started again with the same model and settings (same job id), it
// resumes: layers found intact in the partial output or staged with the recorded hash are not
// redone.

import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { KV, NatsConnection, Subscription } from 'nats';
import type { ArrowQuantConfig } from '../../core/config/schema.js';
import { ArrowQuantError, JobCancelledError, OutputError } from '../../core/errors.js';
import type { LayerTask } from '../../core/job/layer-task.js';
import { cancelSubject, eventsSubject, maxDeliveriesAdvisory } from '../../core/cluster/names.js';
import {
  cancelMessageSchema, decodeMessage, workerEventSchema, type TaskMessage,
} from '../../core/cluster/messages.js';
import { connectNats, type NatsOptions } from '../../core/cluster/nats-options.js';
import { ensureTaskQueue, jobsBucket, workersBucket } from '../../core/cluster/jetstream-setup.js';
import { JobLease } from './job-lease.js';
import { bounded, closeNats } from '../../core/cluster/bounded.js';
import { checkOwnTasks } from './task-check.js';
import { removeStaleTemporaries } from './stale-output.js';
import { StallDetector, clearFailures, onMaxDeliveries, recordedFailure, stallTimeoutMs } from './stall-detector.js';
import { TaskPublisher } from './task-publisher.js';
import type { ServerTlsOptions } from '../../core/grpc/tls.js';
import { ShardServer } from './shard-server.js';
import { ReorderWindow } from './reorder-window.js';
import { partialOutputPath, resumePartialOutput } from './partial-output.js';
import { OrderedOutput, type FinishedLayer, type PreparedJob } from '../job.js';
import type { LayerMeasurer } from '../layer-measurements.js';
import { runJob, type Execution, type JobExecutor } from '../run/driver.js';
import { JobSettlement } from './job-settlement.js';
import { ShardIntake } from './shard-intake.js';
import { advertisedAddress, isLoopback, withPort } from './coordinator-address.js';
import { resumeStaged } from './staged-resume.js';
import { abandonJob, deleteLayerKeys } from './job-state.js';
import { withWorkerMeasurer } from './measure-on-workers.js';
import { finishedFromRecord } from '../run/finished-layer.js';
import type { Progress, RunSummary } from '../run/run-summary.js';

/** How long a stopping coordinator spends telling NATS (which may be unreachable) how the job ended. */
const ABANDON_MS = 2_000;
/** Default reorder window: shard bytes held in memory between their upload and their turn. */
export const DEFAULT_REORDER_WINDOW_BYTES = 256 << 20;

export interface ClusterRunOptions {
  output: string;
  config: ArrowQuantConfig;
  nats: NatsOptions;
  /** where ShardTransfer listens (host:port, port 0 = any) */
  listen: string;
  /** the address workers use to reach it (default: the listen address, or this host's name) */
  advertise?: string;
  grpcTls?: ServerTlsOptions | null;
  /** workers that cannot read the model files may download tensors from this coordinator */
  allowDownload?: boolean;
  /** staging root (default: next to the output) */
  dataDir?: string;
  /** shard bytes kept in memory until their turn in the output (default 256 MiB); the rest is copied from stage files */
  reorderWindowBytes?: number;
  /** uploads receiving bytes at once (default 4) */
  maxConcurrentUploads?: number;
  onProgress?: (p: Progress) => void;
  /** a layer published by this run was staged, `seconds` after its task was published (queue wait, quantize, upload) */
  onLayerStaged?: (index: number, seconds: number) => void;
  /** the run's shard server once it listens, and null once the run is over (for an uploads-in-flight gauge) */
  onShardServer?: (server: { readonly uploadsInFlight: number } | null) => void;
  log?: (line: string) => void;
  /** a job that makes no progress for this long fails, saying why (default 10 min, ARROW_QUANT_STALL_TIMEOUT_MS) */
  stallTimeoutMs?: number;
  /** resolves when the job should be cancelled (e.g. SIGINT) */
  cancel?: Promise<void>;
  /** allocation_strategy measured: the coordinator's measurement cache (null: none; default: defaultCacheDir()) */
  measurementCacheDir?: string | null;
}

export interface ClusterRunSummary extends RunSummary {
  mode: 'cluster';
  layers_resumed: number;
  layers_published: number;
  workers: string[];
  grpc_bytes_received: number;
  /** shards written to the output on arrival (their one write), from the reorder window, and copied from their stage files */
  shards_written_directly: number;
  shards_from_memory: number;
  shards_from_stage_files: number;
}

export function runClusterJob(modelPath: string, opts: ClusterRunOptions): Promise<ClusterRunSummary> {
  return runJob(modelPath, opts, new ClusterExecutor(opts));
}

/** What a cluster run adds to the summary. */
type ClusterFigures = Omit<ClusterRunSummary, keyof RunSummary>;

/**
 * Layers quantized by the cluster's workers: the job's lease and state in NATS, its tasks on the
 * work queue, its shards through the shard server into the (possibly resumed) partial output.
 */
export class ClusterExecutor implements JobExecutor<ClusterFigures> {
  private readonly log: (line: string) => void;
  private readonly runId = randomBytes(8).toString('hex');
  private readonly settlement = new JobSettlement();
  private readonly subs: Subscription[] = [];
  private job!: PreparedJob;
  private stageDir = '';
  private nc: NatsConnection | null = null;
  private kv: KV | null = null;
  private server: ShardServer | null = null;
  private lease: JobLease | null = null;
  private stall: StallDetector | null = null;
  private output: OrderedOutput | null = null;
  private intake: ShardIntake | null = null;
  private resumed = 0;
  private published = 0;
  /** the stage directory (and partial output) stay for a later run to resume */
  private keepStage = true;
  /** the job ended without its file (failed, cancelled, interrupted) */
  private stoppedEarly = false;
  /** a failure from here on tells the workers and the job state that the job is over */
  private abandonOnFailure = false;

  constructor(private readonly opts: ClusterRunOptions) {
    this.log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  }

  /** Connected and holding the job before the measured allocation: workers take tasks only of a job a live coordinator holds. */
  async start(job: PreparedJob): Promise<void> {
    this.job = job;
    const nc = (this.nc = await connectNats(this.opts.nats));
    checkOwnTasks(job, this.runId, nc.info?.max_payload);
    await ensureTaskQueue(nc);
    this.kv = await jobsBucket(nc);
    await this.claim(this.kv);
  }

  /** The measured allocation's candidates are measured by the workers, as measure tasks. */
  withMeasurer(use: (measurer: LayerMeasurer, concurrency: number) => Promise<PreparedJob>): Promise<PreparedJob> {
    const { opts } = this;
    return withWorkerMeasurer(this.job, {
      nc: this.nc!, kv: this.kv!, runId: this.runId, lease: this.lease!, stallMs: opts.stallTimeoutMs ?? stallTimeoutMs(), log: this.log, cancel: opts.cancel,
      onStart: (stop) => void this.settlement.done.catch(stop), // e.g. the lease lost
    }, use);
  }

  async execute(job: PreparedJob): Promise<Execution> {
    const { opts } = this;
    this.job = job;
    this.stageDir = opts.dataDir ? join(opts.dataDir, job.id) : join(dirname(job.output), `.${basename(job.output)}.${job.id}.stage`);
    mkdirSync(this.stageDir, { recursive: true });
    const nc = this.nc!;
    const kv = this.kv!;
    this.server = new ShardServer({ tls: opts.grpcTls ?? null, maxConcurrentUploads: opts.maxConcurrentUploads });
    checkOwnTasks(job, this.runId, nc.info?.max_payload); // the measured allocation may have changed the tasks
    const intake = (this.intake = await this.resume(kv));
    const advertise = await this.serveShards(intake);
    this.subscribe(kv, intake);
    void intake.appendReady();
    if (intake.layersDone === job.tasks.length) this.settlement.succeed();
    const queued = await this.publishTasks(intake, advertise);
    const earlier = queued ? ` (${queued} still queued from an earlier run)` : '';
    this.log(`coordinator: job ${job.id}: ${job.tasks.length} layers, ${this.resumed} already staged, ${this.published} published${earlier}; shards to ${advertise}`);
    this.stall = new StallDetector({
      nc, kv, workersKv: await workersBucket(nc), jobId: job.id, layers: job.tasks.length, done: () => intake.layersDone, isDone: (i) => intake.isDone(i),
      fail: (e) => this.settlement.fail(e), stallMs: opts.stallTimeoutMs ?? stallTimeoutMs(), log: this.log,
      // the consumer is idle then: a fresh look at it tells the dead copies from deliverable ones
      republish: async (layers) => {
        const again = await TaskPublisher.open(nc, this.runId);
        for (const i of layers) await again.publish(this.taskMessage(job.tasks[i]!, advertise));
      },
    });
    this.stall.start();
    this.abandonOnFailure = true;
    await this.settlement.done;
    await intake.appendReady();
    return { output: this.output!, layers: intake.layers(), work: intake.work() };
  }

  /** Hold the job's lease; clear what an earlier run of it left that this run cannot use. */
  private async claim(kv: KV): Promise<void> {
    const { job, log } = this;
    const jobState = { job_id: job.id, model: job.model.name, output: job.output, layers_total: job.tasks.length, state: 'running' as const, coordinator: '' };
    this.lease = await JobLease.claim(kv, jobState, this.runId, (e) => this.settlement.fail(e));
    if (this.lease.previous && this.lease.previous.state.output !== job.output) {
      // A dead run of this job wrote another file: its layer records describe its stage, not ours.
      log(`coordinator: job ${job.id}: clearing the state of an earlier run that wrote ${this.lease.previous.state.output}`);
      await deleteLayerKeys(kv, job);
    }
    await clearFailures(kv, job.id);
    for (const name of removeStaleTemporaries(job.output)) log(`coordinator: removed ${name}, left by a run that died`);
  }

  /** Layers already in the partial output, then layers in the stage directory: the rest is redone. */
  private async resume(kv: KV): Promise<ShardIntake> {
    const { job, log, opts } = this;
    const partial = partialOutputPath(job);
    const inOutput = await resumePartialOutput(job, kv, log);
    if (inOutput.records.length) log(`coordinator: ${inOutput.records.length} layers found written in ${partial}; continuing after them`);
    const finished = new Map<number, FinishedLayer>(inOutput.records.map((r) => [r.layer_index, finishedFromRecord(job, r)]));
    const recorded = new Map<number, string>(inOutput.records.map((r, k) => [r.layer_index, inOutput.hashes[k]!]));
    await resumeStaged(job, this.stageDir, kv, log, finished, recorded);
    this.resumed = finished.size;
    const out = (this.output = inOutput.blocks.length ? await OrderedOutput.reopen(job, partial, inOutput.blocks) : await OrderedOutput.create(job, partial));
    const window = new ReorderWindow(opts.reorderWindowBytes ?? DEFAULT_REORDER_WINDOW_BYTES);
    return new ShardIntake(job, this.stageDir, kv, out, window, this.settlement, finished, recorded, {
      allowDownload: opts.allowDownload ?? false, onProgress: opts.onProgress, onLayerStaged: opts.onLayerStaged, log, onOutputAdvanced: () => this.server?.outputAdvanced(),
    });
  }

  /** The shard server listens with this job registered; the address workers are told. */
  private async serveShards(intake: ShardIntake): Promise<string> {
    const { opts, server } = this;
    server!.registerJob(this.job.id, intake);
    const { port } = await server!.start(opts.listen);
    opts.onShardServer?.(server!);
    const advertise = opts.advertise ? withPort(opts.advertise, port) : advertisedAddress(opts.listen, port);
    await this.lease!.update({ coordinator: advertise });
    if (!opts.grpcTls && !isLoopback(opts.listen)) {
      this.log(`coordinator: warning: shard transfer listens on ${opts.listen} in plaintext: shards${opts.allowDownload ? ' and source weights' : ''} cross the network unencrypted and unauthenticated (--grpc-tls-cert/--grpc-tls-key)`);
    }
    return advertise;
  }

  /** Workers' failure events, cancels of the job, and the task queue's max-deliveries advisories. */
  private subscribe(kv: KV, intake: ShardIntake): void {
    const { job, log, settlement } = this;
    const nc = this.nc!;
    this.subs.push(
      nc.subscribe(eventsSubject(job.id), {
        callback: (_e, m) => {
          let ev;
          try {
            ev = decodeMessage(workerEventSchema, m.data, m.subject);
          } catch (err) {
            log(`coordinator: ignoring ${(err as Error).message}`);
            return;
          }
          if (intake.isDone(ev.layer_index)) return;
          if (ev.type === 'task_refused' || ev.final) {
            // Only what the worker recorded in the job state fails the job: a plain message cannot.
            const layer = ev.layer_index;
            void recordedFailure(kv, job.id, layer).then(
              (err) => (err ? settlement.fail(err) : log(`coordinator: ignoring a ${ev.type} event for layer ${layer} that the job state does not confirm`)),
              (err: Error) => log(`coordinator: cannot check a ${ev.type} event for layer ${layer}: ${err.message}`),
            );
          } else {
            log(`coordinator: worker ${ev.worker_id} failed layer ${ev.layer_index} (${ev.name}), it will be redelivered: ${ev.error.message}`);
          }
        },
      }),
      nc.subscribe(cancelSubject(job.id), {
        callback: (_e, m) => {
          try {
            if (!decodeMessage(cancelMessageSchema, m.data, m.subject).run_id) settlement.fail(new JobCancelledError(job.id));
          } catch (err) {
            log(`coordinator: ignoring ${(err as Error).message}`);
          }
        },
      }),
      nc.subscribe(maxDeliveriesAdvisory, {
        callback: (_e, m) => void onMaxDeliveries(nc, kv, m.data, job.id, (i) => intake.isDone(i), (e) => settlement.fail(e), log),
      }),
    );
    this.opts.cancel?.then(() => settlement.fail(new JobCancelledError(job.id)));
  }

  /** One task per layer not done yet, in canonical order, until the job fails; how many an earlier run left queued. */
  private async publishTasks(intake: ShardIntake, advertise: string): Promise<number> {
    const publisher = await TaskPublisher.open(this.nc!, this.runId);
    let queued = 0;
    for (const task of this.job.tasks) {
      if (this.settlement.failed) break;
      if (intake.isDone(task.layer_index)) continue;
      intake.published(task.layer_index);
      if ((await publisher.publish(this.taskMessage(task, advertise))) === 'queued') queued++;
      this.published++;
    }
    return queued;
  }

  private taskMessage(task: LayerTask, advertise: string): TaskMessage {
    const { opts } = this;
    return { task, run_id: this.runId, coordinator: advertise, tls: !!opts.grpcTls, allow_download: opts.allowDownload ?? false };
  }

  async completed(): Promise<ClusterFigures> {
    const { job, intake } = this;
    this.abandonOnFailure = false;
    await this.lease!.finish('done');
    // The file is complete: a key left over is reported, and reconciled by any later run of the job.
    await deleteLayerKeys(this.kv!, job).catch((e: Error) => this.log(`coordinator: warning: ${e.message}; a later run of job ${job.id} clears it`));
    await clearFailures(this.kv!, job.id).catch((e: Error) => this.log(`coordinator: warning: cannot clear the recorded failures of job ${job.id}: ${e.message}`));
    this.keepStage = false;
    return {
      mode: 'cluster',
      layers_resumed: this.resumed,
      layers_published: this.published,
      workers: intake!.workerIds,
      grpc_bytes_received: intake!.bytesReceived,
      shards_written_directly: intake!.from.direct,
      shards_from_memory: intake!.from.memory,
      shards_from_stage_files: intake!.from.stage,
    };
  }

  /**
   * Whatever stopped the job, its pending tasks go and workers drop its in-flight layers. A
   * failure of the input (exit 2/3), a cancel or this host's disk failing (as a local run on a full
   * disk: nothing half-written stays) also forgets the staged shards; anything else
   * keeps them (and the partial output) so that running the same command again resumes.
   */
  async failed(e: unknown): Promise<unknown> {
    this.stoppedEarly = true;
    if (this.abandonOnFailure) {
      const forget = e instanceof OutputError || (e instanceof ArrowQuantError && e.exitCode >= 2);
      this.keepStage = !forget;
      this.server!.unregisterJob(this.job.id); // no more uploads for this run
      await bounded(abandonJob(this.nc!, this.kv!, this.lease!, this.job, this.runId, e instanceof JobCancelledError ? 'cancelled' : 'failed', (e as Error).message, forget), ABANDON_MS);
      if (this.keepStage) this.log(`coordinator: job ${this.job.id} stopped; its staged shards stay in ${this.stageDir} — run the same command again to resume`);
    }
    if (this.keepStage) await this.output?.detach();
    else await this.output?.abort();
    return e;
  }

  async close(): Promise<void> {
    this.lease?.stop();
    this.stall?.stop();
    for (const s of this.subs) s.unsubscribe();
    // a stopped job's uploads are not worth waiting for: their layers are dropped or redone
    if (this.server) {
      await this.server.stop(this.stoppedEarly ? 1_000 : undefined);
      this.opts.onShardServer?.(null);
    }
    if (this.nc) await closeNats(this.nc, 1_500);
    if (!this.keepStage && this.stageDir) await rm(this.stageDir, { recursive: true, force: true });
  }
}

