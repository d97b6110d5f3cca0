// `status [JOB] --coordinator` and `cancel JOB --coordinator`: the coordinator service's jobs
// (state, layers, queue position, result) and the cluster's workers, through the job API.

import { connectJobApi, unary, type CoordinatorClientValues } from '../job-client.js';
import { formatBytes, formatTable } from '../table.js';
import type { CommandIO } from './io.js';
import { printWorkers } from './status.js';
import { printable } from '../printable.js';

export async function coordinatorStatusCommand([jobId]: string[], values: CoordinatorClientValues & { json?: boolean }, io: CommandIO): Promise<number> {
  const api = connectJobApi(values, io.env);
  try {
    const list = await unary(api, 'List', api.client.List, {});
    const jobs = jobId ? [await unary(api, 'Get', api.client.Get, { job_id: jobId })] : list.jobs;
    const { workers } = list;
    printWorkers(workers, io);
    io.err(`\n${jobs.length} job(s)\n`);
    if (jobs.length) {
      io.err(formatTable(['job', 'state', 'layers', 'bytes', 'queue', 'exit', 'output', 'message'],
        jobs.map((j) => [
          j.job_id, j.state,
          j.progress ? `${j.progress.layers_done}/${j.progress.layers_total}` : '-',
          j.progress ? `${formatBytes(j.progress.bytes_done)}/${formatBytes(j.progress.bytes_total)}` : '-',
          j.queue_position || '', j.result ? j.result.exit_code : '', printable(j.output), printable(j.message),
        ])) + '\n');
    }
    const layers = jobId ? (jobs[0]!.layers ?? []) : [];
    if (layers.length) {
      io.err(`\n${layers.length} layer(s) staged\n`);
      io.err(formatTable(['layer', 'bits', 'cosine', 'worker'], layers.map((l) => [l.layer_index, l.bits, l.cosine.toFixed(6), printable(l.worker)])) + '\n');
    }
    if (values.json) io.out(JSON.stringify({ workers, jobs }, null, 2) + '\n');
    return 0;
  } finally {
    api.close();
  }
}

export async function coordinatorCancelCommand([jobId]: string[], values: CoordinatorClientValues, io: CommandIO): Promise<number> {
  const api = connectJobApi(values, io.env);
  try {
    const job = await unary(api, 'Cancel', api.client.Cancel, { job_id: jobId });
    io.err(`job ${job.job_id}: ${job.state}${job.result ? ` (${printable(job.result.message)})` : ''}\n`);
    return 0;
  } finally {
    api.close();
  }
}
