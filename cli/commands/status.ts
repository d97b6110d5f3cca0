import { UsageError } from '../../core/errors.js';
import { connectNats, natsOptionsFrom, type NatsValues } from '../../core/cluster/nats-options.js';
import { jobsBucket, workersBucket } from '../../core/cluster/jetstream-setup.js';
import { cancelSubject } from '../../core/cluster/names.js';
import { decodeMessage, encodeMessage, jobStateSchema, workerInfoSchema, type JobState, type WorkerInfo } from '../../core/cluster/messages.js';
import type { KV } from 'nats';
import { checkJobId } from '../../core/cluster/job-id.js';
import { closeNats } from '../../core/cluster/bounded.js';
import { formatTable } from '../table.js';
import { printable } from '../printable.js';
import type { CommandIO } from './io.js';
import type { CoordinatorClientValues } from '../job-client.js';


/** Workers (from their liveness entries) and jobs (from the job state), read from NATS. */
export async function statusCommand([jobId]: string[], values: NatsValues & CoordinatorClientValues & { json?: boolean }, io: CommandIO): Promise<number> {
  if (values.coordinator) return (await import('./job-status.js')).coordinatorStatusCommand(jobId ? [jobId] : [], values, io);
  const nats = natsOptionsFrom(values, io.env, 'arrowquant-status');
  if (!nats) throw new UsageError(`missing --nats URL\nsee arrowquant status --help`);
  if (jobId) checkJobId(jobId, 'arrowquant status');
  const nc = await connectNats(nats);
  try {
    const workers: WorkerInfo[] = [];
    const wkv = await workersBucket(nc);
    for (const k of await allKeys(wkv)) {
      const e = await wkv.get(k);
      if (e && e.value.length) workers.push(decodeMessage(workerInfoSchema, e.value, `worker entry ${k}`));
    }
    const jkv = await jobsBucket(nc);
    const jobs: (JobState & { layers_staged: number })[] = [];
    const staged = new Map<string, number>();
    const states: JobState[] = [];
    for (const k of await allKeys(jkv)) {
      const m = /^([A-Za-z0-9_-]+)\.layer\.\d+$/.exec(k);
      if (m) staged.set(m[1]!, (staged.get(m[1]!) ?? 0) + 1);
      // a job's state is "<job>"; "<job>.refused.<i>", "<job>.failed.<i>" and "<job>.measure.…" are workers' records of a layer
      else if (!k.includes('.')) {
        const e = await jkv.get(k);
        if (e && e.value.length) states.push(decodeMessage(jobStateSchema, e.value, `job state ${k}`));
      }
    }
    for (const s of states) if (!jobId || s.job_id === jobId) jobs.push({ ...s, layers_staged: staged.get(s.job_id) ?? 0 });
    if (jobId && jobs.length === 0) throw new UsageError(`no job ${jobId} in the cluster's job state`);
    workers.sort((a, b) => a.id.localeCompare(b.id));
    printWorkers(workers, io);
    io.err(`\n${jobs.length} job(s)\n`);
    if (jobs.length) {
      io.err(formatTable(['job', 'model', 'state', 'layers staged', 'coordinator', 'message'],
        jobs.map((j) => [j.job_id, printable(j.model), j.state, `${j.layers_staged}/${j.layers_total}`, printable(j.coordinator), printable(j.message ?? '')])) + '\n');
    }
    if (values.json) io.out(JSON.stringify({ workers, jobs }, null, 2) + '\n');
    return 0;
  } finally {
    await closeNats(nc);
  }
}

/** The workers table (live workers: kernel, i.e. SIMD level, threads and load). */
export function printWorkers(workers: Pick<WorkerInfo, 'id' | 'host' | 'kernel' | 'threads' | 'concurrency' | 'in_flight' | 'layers_done' | 'version'>[], io: CommandIO): void {
  io.err(`${workers.length} worker(s)\n`);
  if (workers.length) {
    io.err(formatTable(['id', 'host', 'kernel', 'threads', 'concurrency', 'in flight', 'layers done', 'version'],
      workers.map((w) => [printable(w.id), printable(w.host), w.kernel, w.threads, w.concurrency, w.in_flight, w.layers_done, printable(w.version)])) + '\n');
  }
}

/**
 * Every key first, then the reads: awaiting reads while the key listing is still being consumed
 * can end the listing early (it was seen to drop a running job's keys).
 */
async function allKeys(kv: KV): Promise<string[]> {
  const keys: string[] = [];
  for await (const k of await kv.keys()) keys.push(k);
  return keys;
}

/** Ask a job's coordinator to cancel it; it withdraws the tasks and tells the workers. */
export async function cancelCommand([job]: string[], values: NatsValues & CoordinatorClientValues, io: CommandIO): Promise<number> {
  if (values.coordinator) return (await import('./job-status.js')).coordinatorCancelCommand([job], values, io);
  const nats = natsOptionsFrom(values, io.env, 'arrowquant-cancel');
  if (!nats) throw new UsageError(`missing --nats URL\nsee arrowquant cancel --help`);
  checkJobId(job, 'arrowquant cancel');
  const nc = await connectNats(nats);
  try {
    nc.publish(cancelSubject(job), encodeMessage({}));
    await nc.flush();
    io.err(`cancel requested for job ${job}\n`);
    return 0;
  } finally {
    await closeNats(nc);
  }
}
