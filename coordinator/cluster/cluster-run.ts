// `arrowquant quantize … --nats URL`: this process is the job's coordinator. It plans exactly as
// the local run does, publishes one task per layer on the work-queue stream (de-duplicated by
// <job>/<layer>/<plan-hash>), receives shards over gRPC, records each in the job's key-value
// state, and merges them in canonical order into the same file the local run writes. A shard
// that is next in order when it arrives goes straight into the partial output (its one write);
// any other is staged in a directory keyed by the job id (and kept in the reorder window until
// its turn). Killed and started again with the same model and settings (same job id), it
// resumes: layers found intact in the partial output or staged with the recorded hash are not
// redone.

import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { hostname } from 'node:os';
import type { KV, NatsConnection, Subscription } from 'nats';
import type { ArrowQuantConfig } from '../../core/config/schema.js';
import { ArrowQuantError, JobCancelledError, OutputError } from '../../core/errors.js';
import { decodeShard } from '../../core/format/arrow-file.js';
import { recordBytesOut, type LayerRecord } from '../../core/format/layer-schema.js';
import { matrixView } from '../../core/model/model-source.js';
import { cancelSubject, eventsSubject, layerKey, maxDeliveriesAdvisory } from '../../core/cluster/names.js';
import {
  cancelMessageSchema, decodeMessage, encodeMessage, stagedLayerSchema, workerEventSchema, type TaskMessage,
} from '../../core/cluster/messages.js';
import { connectNats, type NatsOptions } from '../../core/cluster/nats-options.js';
import { ensureTaskQueue, jobsBucket, workersBucket } from '../../core/cluster/jetstream-setup.js';
import { JobLease } from './job-lease.js';
import { bounded, closeNats } from '../../core/cluster/bounded.js';
import { checkOwnTasks } from './task-check.js';
import { TaskPublisher } from './task-publisher.js';
import { removeStaleTemporaries } from './stale-output.js';
import { StallDetector, clearFailures, onMaxDeliveries, recordedFailure, stallTimeoutMs } from './stall-detector.js';
import type { ServerTlsOptions } from '../../core/grpc/tls.js';
import type { LayerTask } from '../../core/job/layer-task.js';
import { ShardServer, shardPath, type ShardMaker } from './shard-server.js';
import { zeroTimings } from '../../core/model/row-reader.js';
import { ReorderWindow } from './reorder-window.js';
import { partialOutputPath, resumePartialOutput } from './partial-output.js';
import { checkShardRecord, maxShardBytes } from './shard-check.js';
import { OrderedOutput, prepareJob, type FinishedLayer, type PreparedJob } from '../job.js';
import { applyMeasuredAllocation, usesMeasuredAllocation } from '../measured-allocation.js';
import { LayerRunner } from '../../worker/layer-runner.js';
import { ThreadPool, resolveThreads } from '../../worker/thread-pool.js';
import { addTimings, type Progress, type RunSummary } from '../local-run.js';

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

export async function runClusterJob(modelPath: string, opts: ClusterRunOptions): Promise<ClusterRunSummary> {
  const t0 = performance.now();
  const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const job = await measuredIfNeeded(prepareJob(modelPath, opts.config, opts.output));
  const stageDir = opts.dataDir ? join(opts.dataDir, job.id) : join(dirname(job.output), `.${basename(job.output)}.${job.id}.stage`);
  mkdirSync(stageDir, { recursive: true });
  const nc = await connectNats(opts.nats);
  const server = new ShardServer({ tls: opts.grpcTls ?? null, maxConcurrentUploads: opts.maxConcurrentUploads });
  const window = new ReorderWindow(opts.reorderWindowBytes ?? DEFAULT_REORDER_WINDOW_BYTES);
  const subs: Subscription[] = [];
  let output: OrderedOutput | null = null;
  const runId = randomBytes(8).toString('hex');
  let keepStage = true;
  /** the job ended without its file (failed, cancelled, interrupted) */
  let stoppedEarly = false;
  let lease: JobLease | null = null;
  let stall: StallDetector | null = null;
  let failJob: (e: Error) => void = () => undefined;
  try {
    checkOwnTasks(job, runId, nc.info?.max_payload);
    await ensureTaskQueue(nc);
    const kv = await jobsBucket(nc);
    const jobState = { job_id: job.id, model: job.model.name, output: job.output, layers_total: job.tasks.length, state: 'running' as const, coordinator: '' };
    lease = await JobLease.claim(kv, jobState, runId, (e) => failJob(e));
    if (lease.previous && lease.previous.state.output !== job.output) {
      // A dead run of this job wrote another file: its layer records describe its stage, not ours.
      log(`coordinator: job ${job.id}: clearing the state of an earlier run that wrote ${lease.previous.state.output}`);
      await deleteLayerKeys(kv, job);
    }
    await clearFailures(kv, job.id);
    for (const name of removeStaleTemporaries(job.output)) log(`coordinator: removed ${name}, left by a run that died`);
    // Layers already in the partial output, then layers in the stage directory: the rest is redone.
    const partial = partialOutputPath(job);
    const inOutput = await resumePartialOutput(job, kv, log);
    if (inOutput.records.length) log(`coordinator: ${inOutput.records.length} layers found written in ${partial}; continuing after them`);
    const finished = new Map<number, FinishedLayer>(inOutput.records.map((r) => [r.layer_index, finishedFromRecord(job, r)]));
    const recorded = new Map<number, string>(inOutput.records.map((r, k) => [r.layer_index, inOutput.hashes[k]!]));
    await resumeStaged(job, stageDir, kv, log, finished, recorded);
    const resumed = finished.size;
    output = inOutput.blocks.length ? await OrderedOutput.reopen(job, partial, inOutput.blocks) : await OrderedOutput.create(job, partial);
    const out = output;
    // A shard received into the reorder window is written from there; any other from its stage file.
    const staged = (i: number) => (finished.has(i) ? (window.take(i) ?? shardPath(stageDir, i)) : null);
    const from = { direct: 0, memory: 0, stage: 0 };
    const directly = new Set<number>();
    const written = (shard: Uint8Array | string) => {
      if (typeof shard === 'string') from.stage++;
      else (directly.has(out.written) ? from.direct++ : from.memory++, window.release(shard));
    };
    const appendReady = () => out.appendStaged(staged, written).catch((e) => settle.reject(e));
    const workers = new Set<string>();
    const makers = new Map<string, ShardMaker>();
    let thread = zeroTimings();
    let grpcBytes = 0;
    let bytesDone = [...finished.values()].reduce((s, l) => s + l.bytesIn, 0);
    /** when each layer's task was published by this run (performance.now()) */
    const publishedAt = new Map<number, number>();

    let settle!: { resolve: () => void; reject: (e: unknown) => void };
    let failed = false;
    const done = new Promise<void>((resolve, reject) => (settle = { resolve, reject: (e) => ((failed = true), reject(e)) }));
    done.catch(() => undefined); // it may fail while tasks are still being published; handled where awaited
    failJob = settle.reject;

    server.registerJob(job.id, {
      stageDir,
      allowDownload: opts.allowDownload ?? false,
      layer: (i) => {
        const t = job.tasks[i];
        return t && {
          planHash: t.plan_hash, name: t.name, file: t.file, dataStart: t.data_start, byteLength: t.byte_length,
          maxShardBytes: maxShardBytes(t), check: (r) => checkShardRecord(r, t),
        };
      },
      reserveMemory: (bytes) => (failed ? null : window.tryReserve(bytes)),
      releaseMemory: (buffer) => window.release(buffer),
      writesDirectly: (i) => !failed && i === out.written && !finished.has(i),
      recordedHash: (i) => recorded.get(i),
      onDiskFailure: (e) => settle.reject(e),
      // The job state records the shard before the worker hears back: a worker told "staged"
      // means a restarted coordinator will find it.
      onStaged: async (i, info) => {
        if (failed) throw new ArrowQuantError(`job ${job.id} has stopped`);
        const layer = finishedFromRecord(job, info.record);
        const state = { sha256: info.sha256, size: info.size, bits: layer.bits, cosine: layer.cosine, worker: info.workerId };
        if (info.path === null) {
          // Next in the output and not staged: written there first, then recorded with its place.
          if (out.written !== i) throw new ArrowQuantError(`layer ${i} was to be written directly but the output is at layer ${out.written}`);
          const offset = out.nextOffset;
          directly.add(i);
          window.keep(i, info.bytes!);
          finished.set(i, layer);
          await appendReady();
          if (out.written <= i) throw new ArrowQuantError(`layer ${i} could not be written to ${partial}`);
          // The layer is in the output now: recording it is retried (NATS may be restarting) rather than redone.
          await putRetrying(kv, layerKey(job.id, i), encodeMessage({ ...state, output_offset: offset }), log, () => failed).catch((e: Error) => {
            settle.reject(e);
            throw e;
          });
        } else {
          // Retried too, not failed: a put that timed out may have landed, and a worker then skips
          // the redelivered task as staged while this run has dropped the shard (a layer lost).
          await putRetrying(kv, layerKey(job.id, i), encodeMessage(state), log, () => failed).catch((e: Error) => {
            settle.reject(e);
            throw e;
          });
          if (info.bytes) window.keep(i, info.bytes);
          finished.set(i, layer);
        }
        recorded.set(i, info.sha256);
        workers.add(info.workerId);
        makers.set(info.workerId, info.maker);
        thread = addTimings(thread, info.maker.timings);
        grpcBytes += info.size;
        bytesDone += layer.bytesIn;
        opts.onProgress?.({ layersDone: finished.size, layersTotal: job.tasks.length, bytesDone, bytesTotal: job.plan.totalBytesIn, layer: layer.name });
        const sent = publishedAt.get(i);
        if (sent !== undefined) opts.onLayerStaged?.(i, (performance.now() - sent) / 1000);
        void appendReady();
        if (finished.size === job.tasks.length) settle.resolve();
      },
    });
    const { port } = await server.start(opts.listen);
    opts.onShardServer?.(server);
    const advertise = opts.advertise ? withPort(opts.advertise, port) : advertisedAddress(opts.listen, port);
    await lease.update({ coordinator: advertise });
    if (!opts.grpcTls && !isLoopback(opts.listen)) {
      log(`coordinator: warning: shard transfer listens on ${opts.listen} in plaintext: shards${opts.allowDownload ? ' and source weights' : ''} cross the network unencrypted and unauthenticated (--grpc-tls-cert/--grpc-tls-key)`);
    }

    subs.push(
      nc.subscribe(eventsSubject(job.id), {
        callback: (_e, m) => {
          let ev;
          try {
            ev = decodeMessage(workerEventSchema, m.data, m.subject);
          } catch (err) {
            log(`coordinator: ignoring ${(err as Error).message}`);
            return;
          }
          if (finished.has(ev.layer_index)) return;
          if (ev.type === 'task_refused' || ev.final) {
            // Only what the worker recorded in the job state fails the job: a plain message cannot.
            const layer = ev.layer_index;
            void recordedFailure(kv, job.id, layer).then(
              (err) => (err ? settle.reject(err) : log(`coordinator: ignoring a ${ev.type} event for layer ${layer} that the job state does not confirm`)),
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
            if (!decodeMessage(cancelMessageSchema, m.data, m.subject).run_id) settle.reject(new JobCancelledError(job.id));
          } catch (err) {
            log(`coordinator: ignoring ${(err as Error).message}`);
          }
        },
      }),
      nc.subscribe(maxDeliveriesAdvisory, {
        callback: (_e, m) => void onMaxDeliveries(nc, kv, m.data, job.id, (i) => finished.has(i), settle.reject, log),
      }),
    );
    opts.cancel?.then(() => settle.reject(new JobCancelledError(job.id)));

    let published = 0;
    let queued = 0;
    const taskMessage = (task: LayerTask): TaskMessage => ({ task, run_id: runId, coordinator: advertise, tls: !!opts.grpcTls, allow_download: opts.allowDownload ?? false });
    const publisher = await TaskPublisher.open(nc, runId);
    void appendReady();
    if (finished.size === job.tasks.length) settle.resolve();
    for (const task of job.tasks) {
      if (failed) break;
      if (finished.has(task.layer_index)) continue;
      publishedAt.set(task.layer_index, performance.now());
      if ((await publisher.publish(taskMessage(task))) === 'queued') queued++;
      published++;
    }
    const earlier = queued ? ` (${queued} still queued from an earlier run)` : '';
    log(`coordinator: job ${job.id}: ${job.tasks.length} layers, ${resumed} already staged, ${published} published${earlier}; shards to ${advertise}`);
    stall = new StallDetector({
      nc, kv, workersKv: await workersBucket(nc), jobId: job.id, layers: job.tasks.length, done: () => finished.size, isDone: (i) => finished.has(i),
      fail: (e) => settle.reject(e), stallMs: opts.stallTimeoutMs ?? stallTimeoutMs(), log,
      // the consumer is idle then: a fresh look at it tells the dead copies from deliverable ones
      republish: async (layers) => {
        const again = await TaskPublisher.open(nc, runId);
        for (const i of layers) await again.publish(taskMessage(job.tasks[i]!));
      },
    });
    stall.start();

    try {
      await done;
    } catch (e) {
      // Whatever stopped the job, its pending tasks go and workers drop its in-flight layers.
      // A failure of the input (exit 2/3), a cancel or this host's disk failing (as a local run
      // on a full disk: nothing half-written stays) also forgets the staged shards; anything
      // else keeps them so that running the same command again resumes.
      const forget = e instanceof JobCancelledError || e instanceof OutputError || (e instanceof ArrowQuantError && e.exitCode >= 2);
      keepStage = !forget;
      server.unregisterJob(job.id); // no more uploads for this run
      await bounded(abandonJob(nc, kv, lease, job, runId, e instanceof JobCancelledError ? 'cancelled' : 'failed', (e as Error).message, forget), ABANDON_MS);
      if (keepStage) log(`coordinator: job ${job.id} stopped; its staged shards stay in ${stageDir} — run the same command again to resume`);
      throw e;
    }

    const tMerge = performance.now();
    await appendReady();
    const summary = await out.finish([...finished.values()]).catch(async (e: unknown) => {
      keepStage = !(e instanceof OutputError || (e instanceof ArrowQuantError && e.exitCode >= 2));
      server.unregisterJob(job.id);
      await bounded(abandonJob(nc, kv, lease!, job, runId, 'failed', (e as Error).message, !keepStage), ABANDON_MS);
      throw e;
    });
    const mergeS = (performance.now() - tMerge) / 1000;
    await lease.finish('done');
    // The file is complete: a key left over is reported, and reconciled by any later run of the job.
    await deleteLayerKeys(kv, job).catch((e: Error) => log(`coordinator: warning: ${e.message}; a later run of job ${job.id} clears it`));
    await clearFailures(kv, job.id).catch((e: Error) => log(`coordinator: warning: cannot clear the recorded failures of job ${job.id}: ${e.message}`));
    keepStage = false;
    const elapsed = (performance.now() - t0) / 1000;
    const round = (x: number) => Math.round(x * 1000) / 1000;
    return {
      ...summary,
      mode: 'cluster',
      output: job.output,
      job_id: job.id,
      // what the workers of this run reported: their kernels, their threads in all, their thread time summed
      kernel: [...new Set([...makers.values()].map((m) => m.kernel || 'unknown'))].sort().join('+') || 'none (every layer resumed)',
      threads: [...makers.values()].reduce((s, m) => s + m.threads, 0),
      elapsed_s: round(elapsed),
      input_gb_per_s: round(job.plan.totalBytesIn / 1e9 / elapsed),
      peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
      timings_s: { read: round(thread.readMs / 1e3), kernel: round(thread.kernelMs / 1e3), hash: round(thread.hashMs / 1e3), write: round(thread.writeMs / 1e3), merge: round(mergeS) },
      layers_resumed: resumed,
      layers_published: published,
      workers: [...workers].sort(),
      grpc_bytes_received: grpcBytes,
      shards_written_directly: from.direct,
      shards_from_memory: from.memory,
      shards_from_stage_files: from.stage,
    };
  } catch (e) {
    stoppedEarly = true;
    // A job that can be resumed keeps its partial output next to its stage directory.
    if (keepStage) await output?.detach();
    else await output?.abort();
    throw e;
  } finally {
    lease?.stop();
    stall?.stop();
    for (const s of subs) s.unsubscribe();
    // a stopped job's uploads are not worth waiting for: their layers are dropped or redone
    await server.stop(stoppedEarly ? 1_000 : undefined);
    opts.onShardServer?.(null);
    await closeNats(nc, 1_500);
    if (!keepStage) await rm(stageDir, { recursive: true, force: true });
  }
}

/** The measured allocation quantizes every candidate layer three times: here, on local threads. */
async function measuredIfNeeded(job: PreparedJob): Promise<PreparedJob> {
  if (!usesMeasuredAllocation(job)) return job;
  const pool = await ThreadPool.start(resolveThreads(job.cfg.num_threads));
  try {
    return await applyMeasuredAllocation(job, new LayerRunner(pool), pool.size + 1);
  } finally {
    await pool.close();
  }
}

/** "host" or "host:0" in --advertise means this host name with the port actually bound. */
function withPort(advertise: string, port: number): string {
  const m = /^(.*):(\d+)$/.exec(advertise);
  if (!m) return `${advertise}:${port}`;
  return m[2] === '0' ? `${m[1]}:${port}` : advertise;
}

function isLoopback(listen: string): boolean {
  const host = listen.slice(0, listen.lastIndexOf(':')).replace(/^\[|\]$/g, '');
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

function advertisedAddress(listen: string, port: number): string {
  const host = listen.slice(0, listen.lastIndexOf(':'));
  const h = host === '0.0.0.0' || host === '::' || host === '[::]' || host === '' ? hostname() : host;
  return `${h}:${port}`;
}

/** What a staged shard says about its layer (the coordinator trusts the shard, not the worker). */
function finishedFromRecord(job: PreparedJob, r: LayerRecord): FinishedLayer {
  const { rows, cols } = matrixView(r.shape);
  const t = job.tasks[r.layer_index]!;
  return {
    layerIndex: r.layer_index,
    name: r.layer_name,
    notes: r.notes ? [r.notes] : [],
    elements: rows * cols,
    bits: r.bit_width,
    plannedBits: r.planned_bit_width,
    bytesIn: t.byte_length,
    bytesOut: recordBytesOut(r),
    sqnrDb: r.sqnr_db,
    cosine: r.cosine,
  };
}

/**
 * Reconcile the job state with this run's stage directory before any task is published. A layer
 * counts as done only if its shard is here (where this run's merge reads it), matches the hash
 * the job state recorded and is exactly what the plan produces for it. Every other recorded
 * layer loses its key (so no worker skips it as "already staged") and every other staged file is
 * removed: both are redone.
 */
async function resumeStaged(
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
  const sha = createHash('sha256').update(bytes).digest('hex');
  if (sha !== recorded) return `its SHA-256 ${sha} is not the recorded ${recorded || '(unreadable record)'}`;
  try {
    const record = decodeShard(bytes, `staged shard of layer ${task.layer_index}`).record;
    checkShardRecord(record, task);
    finished.set(task.layer_index, finishedFromRecord(job, record));
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

/** How long recording a layer already written to the output is retried before the job fails. */
const RECORD_RETRY_MS = 30_000;

/** Retries until recorded, the deadline, or the job has stopped (a cancelled job must not wait on NATS). */
async function putRetrying(kv: KV, key: string, value: Uint8Array, log: (l: string) => void, stopped: () => boolean): Promise<void> {
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

async function deleteKey(kv: KV, key: string): Promise<void> {
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
async function abandonJob(
  nc: NatsConnection, kv: KV, lease: JobLease, job: PreparedJob, runId: string, state: 'failed' | 'cancelled', message: string, forgetShards: boolean,
): Promise<void> {
  nc.publish(cancelSubject(job.id), encodeMessage({ run_id: runId }));
  await lease.finish(state, message).catch(() => undefined);
  // The job's own error is what the user needs; a key left over is reconciled by a later run.
  if (forgetShards) await deleteLayerKeys(kv, job).catch((e: Error) => process.stderr.write(`coordinator: warning: ${e.message}\n`));
}

async function deleteLayerKeys(kv: KV, job: PreparedJob): Promise<void> {
  for (const t of job.tasks) await deleteKey(kv, layerKey(job.id, t.layer_index));
}
