// `arrowquant submit`: send a job to a coordinator service and follow it (a progress bar on a
// terminal, JSON events with --json); the exit code is the job's, as a local quantize would give.
// --detach prints the job id and returns; --follow JOB (or `watch JOB`) follows an existing job.

import type { ServiceError } from '@grpc/grpc-js';
import { UsageError } from '../../core/errors.js';
import type { JobEvent, JobMessage } from '../../core/grpc/jobs-proto.js';
import type { RunSummary } from '../../coordinator/local-run.js';
import { JobApiError, connectJobApi, toJobApiError, unary, type CoordinatorClientValues, type JobApi } from '../job-client.js';
import { effectiveConfig, type ConfigValues } from '../options.js';
import { ProgressBar } from '../progress-bar.js';
import type { CommandIO } from './io.js';
import { printable } from '../printable.js';
import { renderSummary } from './quantize.js';

export interface SubmitValues extends ConfigValues, CoordinatorClientValues {
  output?: string;
  json?: boolean;
  detach?: boolean;
  follow?: string;
}

export async function submitCommand([model]: string[], values: SubmitValues, io: CommandIO): Promise<number> {
  if (values.follow && model) throw new UsageError('give either <model> (a new job) or --follow JOB, not both');
  if (!values.follow && !model) throw new UsageError('missing <model> (or --follow JOB)\nsee arrowquant submit --help');
  if (!values.follow && !values.output) throw new UsageError('missing -o, --output <file>');
  const api = connectJobApi(values, io.env);
  try {
    let jobId = values.follow!;
    if (!jobId) {
      const cfg = effectiveConfig(values, io.env);
      const res = await unary(api, 'Submit', api.client.Submit, { model, output: values.output!, config_json: JSON.stringify(cfg) });
      jobId = res.job_id;
      if (values.detach) {
        io.out(`${jobId}\n`);
        return 0;
      }
      io.err(`job ${jobId} submitted to ${api.address}\n`);
    }
    return await followJob(api, jobId, values.json ?? false, io);
  } finally {
    api.close();
  }
}

/** `arrowquant watch JOB`: the same as `submit --follow JOB`. */
export async function watchCommand([jobId]: string[], values: SubmitValues, io: CommandIO): Promise<number> {
  return submitCommand([], { ...values, follow: jobId }, io);
}

/** Follows a job to its end; SIGINT or SIGTERM cancel it (as they would a local quantize). */
export async function followJob(api: JobApi, jobId: string, json: boolean, io: CommandIO): Promise<number> {
  const bar = io.isTTY && !json ? new ProgressBar(io.err) : null;
  const onSignal = () => {
    io.err(`\ncancelling job ${jobId}\n`);
    unary(api, 'Cancel', api.client.Cancel, { job_id: jobId }).catch((e: unknown) => io.err(`${(e as Error).message}\n`));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let last: JobMessage | null = null;
  try {
    last = await new Promise<JobMessage>((resolve, reject) => {
      const stream = api.client.Watch({ job_id: jobId }, api.metadata());
      let final: JobMessage | null = null;
      let state = '';
      stream.on('data', (ev: JobEvent) => {
        if (json) io.out(JSON.stringify(ev) + '\n');
        const p = ev.job.progress;
        if (p) bar?.update({ layersDone: p.layers_done, layersTotal: p.layers_total, bytesDone: p.bytes_done, bytesTotal: p.bytes_total });
        if (!json && ev.job.state !== state) {
          bar?.done();
          state = ev.job.state;
          if (!ev.final) io.err(`job ${jobId}: ${state}${ev.job.queue_position ? ` (queue position ${ev.job.queue_position})` : ''}\n`);
        }
        if (ev.final) final = ev.job;
      });
      stream.on('error', (e: ServiceError) => reject(toJobApiError(e, `Watch of job ${jobId}`, api.address)));
      stream.on('end', () => {
        if (final) resolve(final);
        else reject(new JobApiError(`the coordinator at ${api.address} ended the watch of job ${jobId} before the job finished; follow it again with arrowquant submit --follow ${jobId}`, 14, api.address));
      });
    });
  } finally {
    bar?.done();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  const result = last.result!;
  if (!json) {
    if (last.state === 'done' && result.summary_json) io.err(renderSummary(JSON.parse(result.summary_json) as RunSummary) + '\n');
    else io.err(`job ${jobId} ${last.state}: ${printable(result.message, true)}\n`);
  }
  return result.exit_code;
}
