// The embedded default: this process is the coordinator, a pool of worker threads quantizes.
// Layers stream through: at most a few are in flight; each is written into the output file as
// soon as every layer before it is, straight from the buffers the threads filled.

import type { ArrowQuantConfig } from '../core/config/schema.js';
import { JobCancelledError } from '../core/errors.js';
import { LayerRunner } from '../worker/layer-runner.js';
import { ThreadPool, resolveThreads } from '../worker/thread-pool.js';
import { zeroTimings } from '../core/model/row-reader.js';
import { OrderedOutput, type PreparedJob } from './job.js';
import { encodeBatchMessage } from '../core/format/arrow-file.js';
import type { LayerMeasurer } from './layer-measurements.js';
import { ProgressCounter, addTimings, type Progress, type RunSummary } from './run/run-summary.js';
import { finishedFromOutcome } from './run/finished-layer.js';
import { runInLanes } from './run/lanes.js';
import { runJob, type Execution, type JobExecutor } from './run/driver.js';

export type { Progress, RunSummary } from './run/run-summary.js';

export interface LocalRunOptions {
  output: string;
  config: ArrowQuantConfig;
  onProgress?: (p: Progress) => void;
  /** input bytes per row-range piece of a large layer (tuning; never changes the output) */
  pieceBytes?: number;
  /** resolves when the job should be cancelled (e.g. SIGINT): it stops and leaves nothing behind */
  cancel?: Promise<void>;
  /** told once, e.g. that the native kernels are missing and the slower reference runs */
  onWarning?: (message: string) => void;
  /** allocation_strategy measured: the measurement cache directory (null: none; default: the user's cache) */
  measurementCacheDir?: string | null;
}

export function runLocalJob(modelPath: string, opts: LocalRunOptions): Promise<RunSummary> {
  return runJob(modelPath, opts, new LocalExecutor(opts));
}

/** Layers quantized on this process's thread pool, which also measures them for the measured allocation. */
export class LocalExecutor implements JobExecutor<object> {
  private pool: ThreadPool | null = null;
  private runner: LayerRunner | null = null;
  private output: OrderedOutput | null = null;
  private jobId = '';
  private cancelled = false;

  constructor(private readonly opts: LocalRunOptions) {}

  async start(job: PreparedJob): Promise<void> {
    this.jobId = job.id;
    const pool = (this.pool = await ThreadPool.start(resolveThreads(job.cfg.num_threads)));
    if (pool.kernelWarning) this.opts.onWarning?.(pool.kernelWarning);
    void this.opts.cancel?.then(() => {
      this.cancelled = true;
      void pool.close();
    });
    this.runner = new LayerRunner(pool, this.opts.pieceBytes);
  }

  withMeasurer<T>(use: (measurer: LayerMeasurer, concurrency: number) => Promise<T>): Promise<T> {
    return use(this.runner!, this.pool!.size + 1);
  }

  async execute(job: PreparedJob): Promise<Execution> {
    const pool = this.pool!;
    const runner = this.runner!;
    const out = (this.output = await OrderedOutput.create(job));
    let writeMs = 0;
    const progress = new ProgressCounter(job, this.opts.onProgress);
    // A layer's lane ends only once the layer is written, so at most `lanes` layers are in memory.
    const outcomes = await runInLanes(
      job.tasks.length,
      pool.size + 1,
      async (i) => {
        const r = await runner.run(job.tasks[i]!).catch((e) => {
          out.fail(e);
          throw e;
        });
        try {
          await out.turn(i);
          const tw = performance.now();
          await out.append(i, await encodeBatchMessage(r.record));
          writeMs += performance.now() - tw;
        } catch (e) {
          out.fail(e); // layers waiting for their turn stop waiting (a failed write would strand them)
          throw e;
        } finally {
          r.release();
        }
        return r.outcome;
      },
      (o) => progress.layerDone(o.name, o.bytesIn),
    );
    if (this.cancelled) throw new JobCancelledError(job.id);
    const threadTime = outcomes.reduce((acc, o) => addTimings(acc, o.timings), zeroTimings());
    // the write time is this process's, appending each layer to the file
    return { output: out, layers: outcomes.map(finishedFromOutcome), work: { kernel: pool.kernel, threads: pool.size, timings: { ...threadTime, writeMs } } };
  }

  async completed(): Promise<object> {
    return {};
  }

  async failed(e: unknown): Promise<unknown> {
    await this.output?.abort();
    return this.cancelled ? new JobCancelledError(this.jobId) : e;
  }

  async close(): Promise<void> {
    await this.pool?.close();
  }
}
