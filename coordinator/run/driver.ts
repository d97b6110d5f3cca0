// The one job driver, whoever quantizes: plan → (measured allocation) → tasks → executor →
// ordered output → checks → summary. An executor (local threads, or the cluster's workers) owns
// how layers get quantized and into the job's ordered output; the driver owns the order of the
// steps, the checks that decide whether the file appears, and the summary.

import { OrderedOutput, prepareJob, type FinishedLayer, type PreparedJob } from '../job.js';
import type { ArrowQuantConfig } from '../../core/config/schema.js';
import type { LayerMeasurer } from '../layer-measurements.js';
import { applyMeasuredAllocation, usesMeasuredAllocation } from '../measured-allocation.js';
import { runSummary, type RunSummary, type WorkFigures } from './run-summary.js';

/** Every layer of a job in its ordered output, and who did the work. */
export interface Execution {
  output: OrderedOutput;
  layers: FinishedLayer[];
  work: WorkFigures;
}

export interface JobExecutor<Extra extends object> {
  /** Ready to work on `job` (e.g. threads started); it is planned, its measured allocation still to come. */
  start(job: PreparedJob): Promise<void>;
  /** What measures candidate layers (allocation_strategy: measured), for the duration of `use` (the measured allocation). */
  withMeasurer(use: (measurer: LayerMeasurer, concurrency: number) => Promise<PreparedJob>): Promise<PreparedJob>;
  /** Quantize every layer of `job` into its ordered output (the executor opens it: a cluster job may continue a partial one). */
  execute(job: PreparedJob): Promise<Execution>;
  /** The file is in place; what this executor adds to the summary. */
  completed(): Promise<Extra>;
  /** The run failed (or was cancelled) with `e`: stop what runs, keep or drop the output; the error to throw. */
  failed(e: unknown): Promise<unknown>;
  /** Always last, whatever happened. */
  close(): Promise<void>;
}

export interface DriverOptions {
  output: string;
  config: ArrowQuantConfig;
  /** allocation_strategy measured: the measurement cache directory (null: none; default: the user's cache) */
  measurementCacheDir?: string | null;
}

export async function runJob<Extra extends object>(modelPath: string, opts: DriverOptions, executor: JobExecutor<Extra>): Promise<RunSummary & Extra> {
  const t0 = performance.now();
  const prepared = prepareJob(modelPath, opts.config, opts.output);
  try {
    await executor.start(prepared);
    const job = usesMeasuredAllocation(prepared)
      ? await executor.withMeasurer((measurer, concurrency) => applyMeasuredAllocation(prepared, measurer, concurrency, { cacheDir: opts.measurementCacheDir }))
      : prepared;
    const run = await executor.execute(job);
    const tMerge = performance.now();
    const file = await run.output.finish(run.layers);
    const mergeS = (performance.now() - tMerge) / 1000;
    const extra = await executor.completed();
    return { ...runSummary(job, file, run.work, { elapsedS: (performance.now() - t0) / 1000, mergeS }), ...extra };
  } catch (e) {
    throw await executor.failed(e);
  } finally {
    await executor.close();
  }
}
