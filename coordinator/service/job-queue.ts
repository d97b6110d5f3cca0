// The coordinator service's jobs: submitted requests are validated (paths, configuration, the
// model's headers), recorded, queued, and run in turn — at most maxConcurrent at a time — through
// runClusterJob, the same job driver `quantize --nats` uses. Every change is recorded in the
// service's key-value bucket and told to watchers. On start, queued and running jobs of an earlier
// coordinator are taken up again (a running one resumes from its staged shards).

import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { NatsConnection, Subscription } from 'nats';
import { parsePartialConfig, resolveConfig } from '../../core/config/load.js';
import type { ArrowQuantConfig } from '../../core/config/schema.js';
import { ArrowQuantError, JobCancelledError, exitCodeOf } from '../../core/errors.js';
import { eventsSubject } from '../../core/cluster/names.js';
import { JobHeldError } from '../../core/cluster/errors.js';
import { leaseMs } from '../../core/cluster/job-lease-state.js';
import { decodeMessage, workerEventSchema } from '../../core/cluster/messages.js';
import type { NatsOptions } from '../../core/cluster/nats-options.js';
import type { ServerTlsOptions } from '../../core/grpc/tls.js';
import { JOB_STATES, isFinalState, type JobStateName, type SubmitRequest } from '../../core/grpc/jobs-proto.js';
import { runClusterJob } from '../cluster/cluster-run.js';
import { checkOutputPath, prepareJobForPlan } from '../job.js';
import type { CoordinatorMetrics } from './coordinator-metrics.js';
import { JobStore, type JobRecord } from './job-store.js';
import type { PathPolicy } from './path-policy.js';
import type { ServiceLog } from './service-log.js';

/** A request the service refuses as it stands (the API answers INVALID_ARGUMENT). */
export class JobRequestError extends ArrowQuantError {
  override readonly exitCode = 2;
}
/** A job id the service does not know (NOT_FOUND). */
export class UnknownJobError extends ArrowQuantError {
  constructor(readonly jobId: string) {
    super(`no job ${jobId} on this coordinator`);
  }
}
/** The service is shutting down and takes no new jobs (UNAVAILABLE: try again, e.g. at its successor). */
export class ServiceStoppingError extends ArrowQuantError {}
/** Another queued or running job writes the same output (ALREADY_EXISTS). */
export class OutputBusyError extends ArrowQuantError {
  constructor(message: string, readonly output: string, readonly jobId: string) {
    super(message);
  }
}

export interface JobQueueOptions {
  nats: NatsOptions;
  /** the service's own connection (job records, worker events) */
  nc: NatsConnection;
  /** the service's name: its job records are its own (one running coordinator per name) */
  name: string;
  paths: PathPolicy;
  dataDir: string;
  maxConcurrent: number;
  /** where each job's ShardTransfer server listens, and the address workers use */
  shardListen: string;
  advertise?: string;
  grpcTls: ServerTlsOptions | null;
  allowDownload: boolean;
  log: ServiceLog;
  metrics?: CoordinatorMetrics;
}

type Listener = (rec: JobRecord) => void;

const now = () => new Date().toISOString();

/** Times a job whose cluster job another coordinator's lease still holds is tried again, a lease apart. */
const HELD_RETRIES = 5;

/** Finished jobs kept (in memory and in the bucket); older ones are forgotten, oldest first. */
export const MAX_FINISHED_JOBS = 1000;

export class JobQueue {
  private readonly jobs = new Map<string, JobRecord>();
  private readonly running = new Map<string, { cancel: () => void; done: Promise<void> }>();
  /** the shard servers of running jobs, by job id (for the uploads-in-flight gauge) */
  private readonly shardServers = new Map<string, { readonly uploadsInFlight: number }>();
  private readonly listeners = new Map<string, Set<Listener>>();
  private nextSeq = 0;
  private stopping = false;
  /** after stop(): nothing more is recorded (a job left running stays "running" for the next coordinator) */
  private frozen = false;
  private readonly pendingWrites = new Set<string>();
  /** records are written one at a time, in order (a later write never loses to an earlier one) */
  private writes: Promise<void> = Promise.resolve();

  private constructor(private readonly opts: JobQueueOptions, private readonly store: JobStore) {}

  static async start(opts: JobQueueOptions): Promise<JobQueue> {
    const q = new JobQueue(opts, await JobStore.open(opts.nc, opts.name));
    const earlier = await q.store.all((l) => opts.log.warn(l));
    for (const rec of earlier) {
      q.nextSeq = Math.max(q.nextSeq, rec.seq + 1);
      // An interrupted run goes back to the front of the queue, in its submission order.
      if (rec.state === 'running') opts.log.info('resuming a job that was running when the coordinator stopped', { job: rec.job_id });
      q.jobs.set(rec.job_id, rec.state === 'running' ? { ...rec, state: 'queued', message: 'resumed after a coordinator restart' } : rec);
    }
    const resumed = earlier.filter((r) => !isFinalState(r.state)).length;
    if (resumed) opts.log.info(`${resumed} job(s) queued or running before the restart are queued again`);
    q.schedule();
    return q;
  }

  /** Validates and records a request; resolves with the queued job. */
  async submit(req: SubmitRequest): Promise<JobRecord> {
    if (this.stopping) throw new ServiceStoppingError('the coordinator is shutting down; submit again later');
    const model = this.opts.paths.model(req.model);
    const output = this.opts.paths.output(req.output);
    const cfg = this.config(req.config_json);
    checkOutputPath(output);
    // Reading the headers and planning now refuses a malformed model or an impossible target at submission.
    const plan = prepareJobForPlan(model, cfg);
    for (const other of this.jobs.values()) {
      if (!isFinalState(other.state) && other.output === output) {
        throw new OutputBusyError(`job ${other.job_id} (${other.state}) already writes ${output}`, output, other.job_id);
      }
    }
    const rec: JobRecord = {
      job_id: `${Date.now().toString(36)}${randomBytes(5).toString('hex')}`,
      seq: this.nextSeq++,
      state: 'queued',
      model,
      output,
      config_json: JSON.stringify(cfg),
      progress: { layers_done: 0, layers_total: plan.tasks.length, bytes_done: 0, bytes_total: plan.plan.totalBytesIn },
      result: null,
      submitted_at: now(),
      started_at: '',
      finished_at: '',
      cluster_job_id: plan.id,
      message: '',
    };
    this.jobs.set(rec.job_id, rec);
    await this.record(rec);
    this.opts.log.info(`job submitted: ${model} → ${output}`, { job: rec.job_id, layers: plan.tasks.length });
    this.schedule();
    return rec;
  }

  get(jobId: string): JobRecord {
    const rec = this.jobs.get(jobId);
    if (!rec) throw new UnknownJobError(jobId);
    return rec;
  }

  list(): JobRecord[] {
    return [...this.jobs.values()].sort((a, b) => a.seq - b.seq);
  }

  /** 1 for the next job to run, 0 when not queued. */
  queuePosition(jobId: string): number {
    const queued = this.list().filter((r) => r.state === 'queued');
    return queued.findIndex((r) => r.job_id === jobId) + 1;
  }

  snapshot(): { queueDepth: number; byState: Record<JobStateName, number>; uploadsInFlight: number } {
    const byState = Object.fromEntries(JOB_STATES.map((s) => [s, 0])) as Record<JobStateName, number>;
    for (const r of this.jobs.values()) byState[r.state]++;
    let uploadsInFlight = 0;
    for (const s of this.shardServers.values()) uploadsInFlight += s.uploadsInFlight;
    return { queueDepth: byState.queued, byState, uploadsInFlight };
  }

  /** Cancels a queued job at once, a running one through its driver; a finished one is left as it is. */
  async cancel(jobId: string): Promise<JobRecord> {
    const rec = this.get(jobId);
    if (rec.state === 'queued') {
      this.finish(rec, 'cancelled', { exit_code: 130, message: `job ${jobId} was cancelled before it started`, summary_json: '' });
      await this.writes;
    } else if (rec.state === 'running') {
      const run = this.running.get(jobId);
      run?.cancel();
      await run?.done;
    }
    return this.get(jobId);
  }

  /** Calls `fn` with every later change of the job; returns the unsubscribe function. */
  watch(jobId: string, fn: Listener): () => void {
    this.get(jobId);
    let set = this.listeners.get(jobId);
    if (!set) this.listeners.set(jobId, (set = new Set()));
    set.add(fn);
    return () => {
      set.delete(fn);
      if (set.size === 0) this.listeners.delete(jobId);
    };
  }

  /**
   * Starts nothing more and waits up to `graceMs` for running jobs to finish. Jobs still running
   * then stay "running" in the records (their staged shards kept) for the next coordinator to
   * resume; returns how many.
   */
  async stop(graceMs: number): Promise<number> {
    this.stopping = true;
    let timer: NodeJS.Timeout | undefined;
    const graceOver = new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)));
    await Promise.race([Promise.all([...this.running.values()].map((r) => r.done)), graceOver]);
    clearTimeout(timer);
    await this.writes;
    this.frozen = true;
    return this.running.size;
  }

  private config(json: string): ArrowQuantConfig {
    let value: unknown = {};
    if (json.trim()) {
      try {
        value = JSON.parse(json);
      } catch (e) {
        throw new JobRequestError(`config_json is not valid JSON: ${(e as Error).message}`);
      }
    }
    const cfg = resolveConfig(parsePartialConfig(value, 'submitted config'));
    if (cfg.calibration_path) cfg.calibration_path = this.opts.paths.model(cfg.calibration_path, 'calibration_path');
    return cfg;
  }

  private schedule(): void {
    if (this.stopping) return;
    const busy = new Set([...this.running.keys()].map((id) => this.jobs.get(id)!.cluster_job_id));
    for (const rec of this.list()) {
      if (this.running.size >= this.opts.maxConcurrent) return;
      // Two jobs of the same model and settings share staged shards: never at the same time.
      if (rec.state !== 'queued' || busy.has(rec.cluster_job_id)) continue;
      busy.add(rec.cluster_job_id);
      this.run(rec);
    }
  }

  private run(queued: JobRecord): void {
    const rec: JobRecord = { ...queued, state: 'running', started_at: now(), message: queued.message };
    this.update(rec);
    let cancel!: () => void;
    const cancelled = new Promise<void>((resolve) => (cancel = resolve));
    const done = this.drive(rec, cancelled).finally(() => {
      this.running.delete(rec.job_id);
      this.schedule();
    });
    this.running.set(rec.job_id, { cancel, done });
  }

  private async drive(start: JobRecord, cancelled: Promise<void>): Promise<void> {
    const { opts } = this;
    const id = start.job_id;
    const t0 = performance.now();
    let lastLayers = start.progress?.layers_done ?? 0;
    let lastBytes = start.progress?.bytes_done ?? 0;
    const events: Subscription = opts.nc.subscribe(eventsSubject(start.cluster_job_id), {
      callback: (_e, m) => {
        try {
          const ev = decodeMessage(workerEventSchema, m.data, m.subject);
          if (ev.type !== 'task_refused') opts.metrics?.layersFailed.inc();
        } catch {
          /* runClusterJob reports malformed events */
        }
      },
    });
    opts.log.info('job started', { job: id, cluster_job: start.cluster_job_id });
    try {
      const summary = await this.runHeldAware(id, cancelled, () => runClusterJob(start.model, {
        output: start.output,
        config: resolveConfig(parsePartialConfig(JSON.parse(start.config_json), `job ${id} record`)),
        nats: { ...opts.nats, name: `arrowquant-coordinator-job-${id}` },
        listen: opts.shardListen,
        advertise: opts.advertise,
        grpcTls: opts.grpcTls,
        allowDownload: opts.allowDownload,
        dataDir: join(opts.dataDir, 'stage'),
        cancel: cancelled,
        log: (l) => opts.log.info(l.replace(/^coordinator: /, ''), { job: id }),
        onLayerStaged: (_i, seconds) => opts.metrics?.layerDuration.observe(seconds),
        onShardServer: (s) => (s ? this.shardServers.set(id, s) : this.shardServers.delete(id)),
        onProgress: (p) => {
          if (p.layersDone > lastLayers) opts.metrics?.layersDone.inc(p.layersDone - lastLayers);
          if (p.bytesDone > lastBytes) opts.metrics?.bytesIn.inc(p.bytesDone - lastBytes);
          lastLayers = p.layersDone;
          lastBytes = p.bytesDone;
          opts.log.info(`layer ${p.layersDone}/${p.layersTotal} staged: ${p.layer}`, { job: id });
          this.update({ ...this.get(id), progress: { layers_done: p.layersDone, layers_total: p.layersTotal, bytes_done: p.bytesDone, bytes_total: p.bytesTotal } });
        },
      }));
      opts.metrics?.bytesOut.inc(summary.bytes_out);
      opts.metrics?.jobDuration.observe({ state: 'done' }, (performance.now() - t0) / 1000);
      const rec = this.get(id);
      const progress = { layers_done: summary.layers, layers_total: summary.layers, bytes_done: summary.bytes_in, bytes_total: summary.bytes_in };
      this.finish({ ...rec, progress }, 'done', { exit_code: 0, message: `wrote ${summary.output}`, summary_json: JSON.stringify(summary) });
      opts.log.info(`job done: wrote ${summary.output}`, { job: id, bytes_out: summary.bytes_out });
    } catch (e) {
      const state = e instanceof JobCancelledError ? 'cancelled' : 'failed';
      const code = exitCodeOf(e);
      opts.metrics?.jobDuration.observe({ state }, (performance.now() - t0) / 1000);
      this.finish(this.get(id), state, { exit_code: code, message: e instanceof ArrowQuantError ? e.message : `internal error: ${(e as Error)?.message ?? String(e)}`, summary_json: '' });
      opts.log.warn(`job ${state}: ${(e as Error)?.message ?? String(e)}`, { job: id, exit_code: code });
    } finally {
      events.unsubscribe();
      await this.writes;
    }
  }

  /**
   * Runs the job driver; while its cluster job is still held by another coordinator's lease (the
   * previous coordinator, stopped on another host, whose lease has not run out), waits a lease and
   * tries again, at most HELD_RETRIES times, then fails with the holder named.
   */
  private async runHeldAware<T>(id: string, cancelled: Promise<void>, run: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await run();
      } catch (e) {
        if (!(e instanceof JobHeldError) || attempt > HELD_RETRIES || this.stopping) throw e;
        const wait = leaseMs();
        this.opts.log.info(`${e.message}; trying again in ${(wait / 1000).toFixed(1)} s (attempt ${attempt} of ${HELD_RETRIES})`, { job: id });
        this.update({ ...this.get(id), message: `waiting for the previous coordinator's lease on the cluster job to run out` });
        let timer: NodeJS.Timeout | undefined;
        const gone = await Promise.race([cancelled.then(() => true), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), wait)))]);
        clearTimeout(timer);
        if (gone) throw new JobCancelledError(id);
      }
    }
  }

  private finish(rec: JobRecord, state: 'done' | 'failed' | 'cancelled', result: NonNullable<JobRecord['result']>): void {
    this.update({ ...rec, state, result, finished_at: now(), message: result.message });
    const finished = this.list().filter((r) => isFinalState(r.state));
    for (const old of finished.slice(0, Math.max(0, finished.length - MAX_FINISHED_JOBS))) {
      this.jobs.delete(old.job_id);
      this.writes = this.writes.then(() => this.store.delete(old.job_id)).catch((e: unknown) => this.opts.log.warn(`could not forget job ${old.job_id}: ${(e as Error).message}`));
    }
  }

  private update(rec: JobRecord): void {
    this.jobs.set(rec.job_id, rec);
    for (const fn of this.listeners.get(rec.job_id) ?? []) fn(rec);
    void this.record(rec);
  }

  /** Queues the write of the job's latest record (one pending write per job); failures are logged. */
  private record(rec: JobRecord): Promise<void> {
    const id = rec.job_id;
    if (this.frozen) return Promise.resolve();
    if (this.pendingWrites.has(id)) return this.writes;
    this.pendingWrites.add(id);
    this.writes = this.writes
      .then(() => {
        this.pendingWrites.delete(id);
        return this.frozen ? undefined : this.store.put(this.jobs.get(id) ?? rec);
      })
      .catch((e: unknown) => this.opts.log.warn(`could not record job ${id}: ${(e as Error).message}`));
    return this.writes;
  }
}
