// The embedded default: this process is the coordinator, a pool of worker threads quantizes.
// Layers stream through: at most a few are in flight; each is written into the output file as
// soon as every layer before it is, straight from the buffers the threads filled.

import type { ArrowQuantConfig } from '../core/config/schema.js';
import { ArrowQuantError, JobCancelledError } from '../core/errors.js';
import { LayerRunner, type LayerOutcome } from '../worker/layer-runner.js';
import { ThreadPool, resolveThreads } from '../worker/thread-pool.js';
import { zeroTimings, type Timings } from '../core/model/row-reader.js';
import type { FileSummary } from './file-metadata.js';
import { OrderedOutput, prepareJob, type FinishedLayer } from './job.js';
import { applyMeasuredAllocation } from './measured-allocation.js';
import { encodeBatchMessage } from '../core/format/arrow-file.js';
import type { AllocationSummary } from '../core/plan/allocation-summary.js';

export interface Progress {
  layersDone: number;
  layersTotal: number;
  bytesDone: number;
  bytesTotal: number;
  /** the layer that just finished */
  layer: string;
}

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

/** The command's own summary: the file's summary plus how this run went (never in the file). */
export interface RunSummary extends FileSummary {
  output: string;
  job_id: string;
  kernel: string;
  threads: number;
  elapsed_s: number;
  input_gb_per_s: number;
  /** peak resident memory of this process (all threads) */
  peak_rss_mb: number;
  timings_s: { read: number; kernel: number; hash: number; write: number; merge: number };
  /** allocation_strategy measured: the optimiser's prediction and comparisons (as in the file) */
  allocation?: AllocationSummary;
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
    // A layer's lane ends only once the layer is written, so at most `lanes` layers are in memory.
    const outcomes = await runAll(
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
      (o, done) => opts.onProgress?.({ layersDone: done.count, layersTotal: job.tasks.length, bytesDone: done.bytes, bytesTotal: job.plan.totalBytesIn, layer: o.name }),
    );
    if (cancelled) throw new JobCancelledError(job.id);
    const tFinish = performance.now();
    const summary = await output.finish(outcomes.map(toFinished));
    const finishS = (performance.now() - tFinish) / 1000;
    const elapsed = (performance.now() - t0) / 1000;
    const t = outcomes.reduce((acc, o) => addTimings(acc, o.timings), zeroTimings());
    return {
      ...summary,
      output: job.output,
      job_id: job.id,
      kernel: pool.kernel,
      threads: pool.size,
      elapsed_s: round(elapsed),
      input_gb_per_s: round(job.plan.totalBytesIn / 1e9 / elapsed),
      peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
      timings_s: { read: round(t.readMs / 1e3), kernel: round(t.kernelMs / 1e3), hash: round(t.hashMs / 1e3), write: round(writeMs / 1e3), merge: round(finishS) },
      ...(job.plan.allocation ? { allocation: job.plan.allocation } : {}),
    };
  } catch (e) {
    await output?.abort();
    throw cancelled ? new JobCancelledError(job.id) : e;
  } finally {
    await pool.close();
  }
}

function toFinished(o: LayerOutcome): FinishedLayer {
  return { layerIndex: o.layerIndex, name: o.name, notes: o.notes, elements: o.elements, bits: o.bits, plannedBits: o.plannedBits, bytesIn: o.bytesIn, bytesOut: o.bytesOut, sqnrDb: o.sqnrDb, cosine: o.cosine };
}

export function addTimings(a: Timings, b: Timings): Timings {
  return { readMs: a.readMs + b.readMs, kernelMs: a.kernelMs + b.kernelMs, hashMs: a.hashMs + b.hashMs, writeMs: a.writeMs + b.writeMs };
}

const round = (x: number) => Math.round(x * 1000) / 1000;

/**
 * Run tasks 0..n−1 with at most `limit` in flight, started in order. On the first failure no
 * new task starts; once the running ones settle, the failure of the lowest task index is thrown
 * (so the error a user sees does not depend on thread timing).
 */
async function runAll(
  n: number,
  limit: number,
  run: (i: number) => Promise<LayerOutcome>,
  onDone: (o: LayerOutcome, done: { count: number; bytes: number }) => void,
): Promise<LayerOutcome[]> {
  const results: LayerOutcome[] = new Array(n);
  const failures: { index: number; error: unknown }[] = [];
  const done = { count: 0, bytes: 0 };
  let next = 0;
  const lane = async () => {
    while (failures.length === 0 && next < n) {
      const i = next++;
      try {
        const o = await run(i);
        results[i] = o;
        done.count++;
        done.bytes += o.bytesIn;
        onDone(o, done);
      } catch (error) {
        failures.push({ index: i, error });
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, n) }, lane));
  if (failures.length) {
    const first = failures.sort((a, b) => a.index - b.index)[0]!.error;
    throw first instanceof Error ? first : new ArrowQuantError(String(first));
  }
  return results;
}
