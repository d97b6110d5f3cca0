// The embedded default: this process is the coordinator, a pool of worker threads quantizes.
// Layers stream through: at most a few are in flight; each is written into the output file as
// soon as every layer before it is, straight from the buffers the threads filled.

import type { ArrowQuantConfig } from '../core/config/schema.js';
import { JobCancelledError } from '../core/errors.js';
import { LayerRunner } from '../worker/layer-runner.js';
import { ThreadPool, resolveThreads } from '../worker/thread-pool.js';
import { zeroTimings } from '../core/model/row-reader.js';
import { OrderedOutput, prepareJob } from './job.js';
import { applyMeasuredAllocation } from './measured-allocation.js';
import { encodeBatchMessage } from '../core/format/arrow-file.js';
import { addTimings, runSummary, type Progress, type RunSummary } from './run/run-summary.js';
import { finishedFromOutcome } from './run/finished-layer.js';
import { runInLanes } from './run/lanes.js';

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

export async function runLocalJob(modelPath: string, opts: LocalRunOptions): Promise<RunSummary> {
  const t0 = performance.now();
  let job = prepareJob(modelPath, opts.config, opts.output);
  const pool = await ThreadPool.start(resolveThreads(opts.config.num_threads));
  if (pool.kernelWarning) opts.onWarning?.(pool.kernelWarning);
  let output: OrderedOutput | null = null;
  let cancelled = false;
  void opts.cancel?.then(() => {
    cancelled = true;
    void pool.close();
  });
  try {
    const runner = new LayerRunner(pool, opts.pieceBytes);
    job = await applyMeasuredAllocation(job, runner, pool.size + 1, { cacheDir: opts.measurementCacheDir });
    output = await OrderedOutput.create(job);
    const out = output;
    let writeMs = 0;
    let done = { count: 0, bytes: 0 };
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
      (o) => {
        done = { count: done.count + 1, bytes: done.bytes + o.bytesIn };
        opts.onProgress?.({ layersDone: done.count, layersTotal: job.tasks.length, bytesDone: done.bytes, bytesTotal: job.plan.totalBytesIn, layer: o.name });
      },
    );
    if (cancelled) throw new JobCancelledError(job.id);
    const tFinish = performance.now();
    const summary = await output.finish(outcomes.map(finishedFromOutcome));
    const mergeS = (performance.now() - tFinish) / 1000;
    const threadTime = outcomes.reduce((acc, o) => addTimings(acc, o.timings), zeroTimings());
    const work = { kernel: pool.kernel, threads: pool.size, timings: { ...threadTime, writeMs } };
    return runSummary(job, summary, work, { elapsedS: (performance.now() - t0) / 1000, mergeS });
  } catch (e) {
    await output?.abort();
    throw cancelled ? new JobCancelledError(job.id) : e;
  } finally {
    await pool.close();
  }
}
