// `arrowquant quantize … --nats URL`: this process is the job's coordinator. It plans exactly as
// the local run does, publishes one task per layer on the work-queue stream (de-duplicated by
// <job>/<layer>/<plan-hash>), receives shards over gRPC into a staging directory keyed by the
// job id, records each in the job's key-value state, and merges them into the same file the
// local run writes. Killed and started again with the same model and settings (same job id),
// it resumes: layers whose staged shard matches the recorded hash are not redone.

import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { hostname } from 'node:os';
import type { KV, NatsConnection, Subscription } from 'nats';
import type { ArrowQuantConfig } from '../../core/config/schema.js';
import { ArrowQuantError, JobCancelledError, deserializeError } from '../../core/errors.js';
import { decodeShard } from '../../core/format/arrow-file.js';
import { recordBytesOut, type LayerRecord } from '../../core/format/layer-schema.js';
import { matrixView } from '../../core/model/model-source.js';
import {
  TASK_STREAM, cancelSubject, eventsSubject, layerKey, maxDeliveriesAdvisory, taskMessageId, taskSubject,
} from '../../core/cluster/names.js';
import {
  cancelMessageSchema, decodeMessage, encodeMessage, stagedLayerSchema, taskMessageSchema, workerEventSchema, type TaskMessage,
} from '../../core/cluster/messages.js';
import { connectNats, type NatsOptions } from '../../core/cluster/nats-options.js';
import { ensureTaskQueue, jobsBucket, workersBucket } from '../../core/cluster/jetstream-setup.js';
import { DeliveriesExhaustedError, TaskRefusedError } from '../../core/cluster/errors.js';
import { JobLease } from './job-lease.js';
import { bounded, closeNats } from '../../core/cluster/bounded.js';
import { checkOwnTasks } from './task-check.js';
import { removeStaleTemporaries } from './stale-output.js';
import { StallDetector, clearFailures, recordedFailure, stallTimeoutMs } from './stall-detector.js';
import type { ServerTlsOptions } from '../../core/grpc/tls.js';
import { ShardServer, shardPath } from './shard-server.js';
import { OrderedOutput, prepareJob, type FinishedLayer, type PreparedJob } from '../job.js';
import { applyMeasuredAllocation, usesMeasuredAllocation } from '../measured-allocation.js';
import { LayerRunner } from '../../worker/layer-runner.js';
import { ThreadPool, resolveThreads } from '../../worker/thread-pool.js';
import type { Progress, RunSummary } from '../local-run.js';

/** How long a stopping coordinator spends telling NATS (which may be unreachable) how the job ended. */
const ABANDON_MS = 2_000;
/** Staged shards this close to the next layer to write are kept in memory until written. */
const IN_MEMORY_AHEAD = 4;

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
  onProgress?: (p: Progress) => void;
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
}

export async function runClusterJob(modelPath: string, opts: ClusterRunOptions): Promise<ClusterRunSummary> {
  const t0 = performance.now();
  const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const job = await measuredIfNeeded(prepareJob(modelPath, opts.config, opts.output));
  const stageDir = opts.dataDir ? join(opts.dataDir, job.id) : join(dirname(job.output), `.${basename(job.output)}.${job.id}.stage`);
  mkdirSync(stageDir, { recursive: true });
  const nc = await connectNats(opts.nats);
  const server = new ShardServer({ tls: opts.grpcTls ?? null });
  const subs: Subscription[] = [];
  let output: OrderedOutput | null = null;
  const runId = randomBytes(8).toString('hex');
  let keepStage = true;
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
    const finished = await resumeStaged(job, stageDir, kv, log);
    const resumed = finished.size;
    output = await OrderedOutput.create(job);
    const out = output;
    // Shards that arrive while their turn is near stay in memory until written; others are read back.
    const inMemory = new Map<number, Uint8Array>();
    const staged = (i: number) => {
      if (!finished.has(i)) return null;
      const bytes = inMemory.get(i);
      inMemory.delete(i);
      return bytes ?? shardPath(stageDir, i);
    };
    const appendReady = () => out.appendStaged(staged).catch((e) => settle.reject(e));
    const workers = new Set<string>();
    let grpcBytes = 0;
    let bytesDone = [...finished.values()].reduce((s, l) => s + l.bytesIn, 0);

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
        return t && { planHash: t.plan_hash, name: t.name, file: t.file, dataStart: t.data_start, byteLength: t.byte_length };
      },
      // The job state records the shard before the worker hears back: a worker told "staged"
      // means a restarted coordinator will find it.
      onStaged: async (i, info) => {
        if (failed) throw new ArrowQuantError(`job ${job.id} has stopped`);
        const layer = finishedFromRecord(job, info.record);
        if (info.bytes && i < out.written + IN_MEMORY_AHEAD) inMemory.set(i, info.bytes);
        await kv.put(layerKey(job.id, i), encodeMessage({ sha256: info.sha256, size: info.size, bits: layer.bits, cosine: layer.cosine, worker: info.workerId }));
        finished.set(i, layer);
        workers.add(info.workerId);
        grpcBytes += info.size;
        bytesDone += layer.bytesIn;
        opts.onProgress?.({ layersDone: finished.size, layersTotal: job.tasks.length, bytesDone, bytesTotal: job.plan.totalBytesIn, layer: layer.name });
        void appendReady();
        if (finished.size === job.tasks.length) settle.resolve();
      },
    });
    const { port } = await server.start(opts.listen);
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
        callback: (_e, m) => void onMaxDeliveries(nc, m.data, job.id, finished, settle.reject, log),
      }),
    );
    opts.cancel?.then(() => settle.reject(new JobCancelledError(job.id)));

    let published = 0;
    void appendReady();
    if (finished.size === job.tasks.length) settle.resolve();
    for (const task of job.tasks) {
      if (failed) break;
      if (finished.has(task.layer_index)) continue;
      const msg: TaskMessage = { task, run_id: runId, coordinator: advertise, tls: !!opts.grpcTls, allow_download: opts.allowDownload ?? false };
      await publishTask(nc, msg, runId);
      published++;
    }
    log(`coordinator: job ${job.id}: ${job.tasks.length} layers, ${resumed} already staged, ${published} published; shards to ${advertise}`);
    stall = new StallDetector({
      nc, kv, workersKv: await workersBucket(nc), jobId: job.id, layers: job.tasks.length, done: () => finished.size, isDone: (i) => finished.has(i),
      fail: (e) => settle.reject(e), stallMs: opts.stallTimeoutMs ?? stallTimeoutMs(),
    });
    stall.start();

    try {
      await done;
    } catch (e) {
      // Whatever stopped the job, its pending tasks go and workers drop its in-flight layers.
      // A failure of the input (exit 2/3) or a cancel also forgets the staged shards; anything
      // else keeps them so that running the same command again resumes.
      const forget = e instanceof JobCancelledError || (e instanceof ArrowQuantError && e.exitCode >= 2);
      keepStage = !forget;
      server.unregisterJob(job.id); // no more uploads for this run
      await bounded(abandonJob(nc, kv, lease, job, runId, e instanceof JobCancelledError ? 'cancelled' : 'failed', (e as Error).message, forget), ABANDON_MS);
      if (keepStage) log(`coordinator: job ${job.id} stopped; its staged shards stay in ${stageDir} — run the same command again to resume`);
      throw e;
    }

    const tMerge = performance.now();
    await appendReady();
    const summary = await out.finish([...finished.values()]).catch(async (e: unknown) => {
      keepStage = !(e instanceof ArrowQuantError && e.exitCode >= 2);
      server.unregisterJob(job.id);
      await bounded(abandonJob(nc, kv, lease!, job, runId, 'failed', (e as Error).message, !keepStage), ABANDON_MS);
      throw e;
    });
    const mergeS = (performance.now() - tMerge) / 1000;
    await lease.finish('done');
    await deleteLayerKeys(kv, job);
    keepStage = false;
    const elapsed = (performance.now() - t0) / 1000;
    const round = (x: number) => Math.round(x * 1000) / 1000;
    return {
      ...summary,
      mode: 'cluster',
      output: job.output,
      job_id: job.id,
      kernel: 'cluster workers',
      threads: 0,
      elapsed_s: round(elapsed),
      input_gb_per_s: round(job.plan.totalBytesIn / 1e9 / elapsed),
      peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
      timings_s: { read: 0, kernel: 0, hash: 0, write: 0, merge: round(mergeS) },
      layers_resumed: resumed,
      layers_published: published,
      workers: [...workers].sort(),
      grpc_bytes_received: grpcBytes,
    };
  } catch (e) {
    await output?.abort();
    throw e;
  } finally {
    lease?.stop();
    stall?.stop();
    for (const s of subs) s.unsubscribe();
    await server.stop();
    await closeNats(nc, 1_500);
    if (!keepStage) await rm(stageDir, { recursive: true, force: true });
  }
}

/**
 * Publish a task, de-duplicated by <job>/<layer>/<plan-hash>. A duplicate whose original is still
 * queued (a resumed job) is left alone; one whose original is gone (acked or purged by an earlier
 * run that failed) is published again under this run's id.
 */
async function publishTask(nc: NatsConnection, msg: TaskMessage, runId: string): Promise<void> {
  const js = nc.jetstream();
  const t = msg.task;
  const id = taskMessageId(t.job_id, t.layer_index, t.plan_hash);
  const ack = await js.publish(taskSubject(t.job_id), encodeMessage(msg), { msgID: id });
  if (!ack.duplicate) return;
  try {
    const jsm = await nc.jetstreamManager();
    await jsm.streams.getMessage(TASK_STREAM, { seq: ack.seq });
  } catch {
    await js.publish(taskSubject(t.job_id), encodeMessage(msg), { msgID: `${id}/${runId}` });
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

/** Staged shards whose hash matches the job state are kept; anything else is removed and redone. */
async function resumeStaged(job: PreparedJob, stageDir: string, kv: KV, log: (l: string) => void): Promise<Map<number, FinishedLayer>> {
  const finished = new Map<number, FinishedLayer>();
  for (const task of job.tasks) {
    const path = shardPath(stageDir, task.layer_index);
    if (!existsSync(path)) continue;
    const entry = await kv.get(layerKey(job.id, task.layer_index));
    const bytes = readFileSync(path);
    const sha = createHash('sha256').update(bytes).digest('hex');
    let ok = false;
    if (entry && entry.value.length) {
      try {
        ok = decodeMessage(stagedLayerSchema, entry.value, 'job state').sha256 === sha;
      } catch {
        ok = false;
      }
    }
    if (ok) {
      try {
        finished.set(task.layer_index, finishedFromRecord(job, decodeShard(bytes).record));
      } catch {
        ok = false;
      }
    }
    if (!ok) {
      log(`coordinator: staged shard of layer ${task.layer_index} does not match the job state; it will be redone`);
      rmSync(path, { force: true });
    }
  }
  return finished;
}

async function onMaxDeliveries(
  nc: NatsConnection, data: Uint8Array, jobId: string, finished: Map<number, FinishedLayer>, fail: (e: unknown) => void, log: (l: string) => void,
): Promise<void> {
  try {
    const adv = JSON.parse(new TextDecoder().decode(data)) as { stream_seq?: number; deliveries?: number };
    if (!adv.stream_seq) return;
    const jsm = await nc.jetstreamManager();
    const sm = await jsm.streams.getMessage(TASK_STREAM, { seq: adv.stream_seq });
    const tm = decodeMessage(taskMessageSchema, sm.data, sm.subject);
    if (tm.task.job_id !== jobId || finished.has(tm.task.layer_index)) return;
    fail(new DeliveriesExhaustedError(
      `layer ${tm.task.layer_index} (${tm.task.name}) failed ${adv.deliveries ?? 'the maximum number of'} deliveries; see the workers' logs`,
      tm.task.name,
      adv.deliveries ?? 0,
    ));
  } catch (e) {
    log(`coordinator: could not read a max-deliveries advisory: ${(e as Error).message}`);
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
  if (forgetShards) await deleteLayerKeys(kv, job);
}

async function deleteLayerKeys(kv: KV, job: PreparedJob): Promise<void> {
  for (const t of job.tasks) await kv.delete(layerKey(job.id, t.layer_index)).catch(() => undefined);
}
