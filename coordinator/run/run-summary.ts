// What a run of a job reports besides the file's own summary: where it wrote, what quantized
// (kernels, threads, thread time), how long it took. One builder for local and cluster runs, so
// both summaries have the same fields with the same rounding.

import type { Timings } from '../../core/model/row-reader.js';
import type { AllocationSummary } from '../../core/plan/allocation-summary.js';
import type { FileSummary } from '../file-metadata.js';
import type { PreparedJob } from '../job.js';

export interface Progress {
  layersDone: number;
  layersTotal: number;
  bytesDone: number;
  bytesTotal: number;
  /** the layer that just finished */
  layer: string;
}

/** Counts a run's finished layers for its onProgress listener (layers done before it included). */
export class ProgressCounter {
  private layers: number;
  private bytes: number;

  constructor(
    private readonly job: PreparedJob,
    private readonly listener: ((p: Progress) => void) | undefined,
    already: { layers: number; bytes: number } = { layers: 0, bytes: 0 },
  ) {
    this.layers = already.layers;
    this.bytes = already.bytes;
  }

  layerDone(name: string, bytesIn: number): void {
    this.layers++;
    this.bytes += bytesIn;
    this.listener?.({ layersDone: this.layers, layersTotal: this.job.tasks.length, bytesDone: this.bytes, bytesTotal: this.job.plan.totalBytesIn, layer: name });
  }
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

/** Who quantized the layers of a run: their kernels, their threads in all, their thread time summed. */
export interface WorkFigures {
  kernel: string;
  threads: number;
  timings: Timings;
}

/** Seconds of a run: from start to the file in place, and of the final merge (checks, footer). */
export interface RunTimes {
  elapsedS: number;
  mergeS: number;
}

export function runSummary(job: PreparedJob, file: FileSummary, work: WorkFigures, times: RunTimes): RunSummary {
  const t = work.timings;
  return {
    ...file,
    output: job.output,
    job_id: job.id,
    kernel: work.kernel,
    threads: work.threads,
    elapsed_s: round(times.elapsedS),
    input_gb_per_s: round(job.plan.totalBytesIn / 1e9 / times.elapsedS),
    peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
    timings_s: { read: round(t.readMs / 1e3), kernel: round(t.kernelMs / 1e3), hash: round(t.hashMs / 1e3), write: round(t.writeMs / 1e3), merge: round(times.mergeS) },
    ...(job.plan.allocation ? { allocation: job.plan.allocation } : {}),
  };
}

export function addTimings(a: Timings, b: Timings): Timings {
  return { readMs: a.readMs + b.readMs, kernelMs: a.kernelMs + b.kernelMs, hashMs: a.hashMs + b.hashMs, writeMs: a.writeMs + b.writeMs };
}

/** Figures in a summary: milliseconds (of seconds, of GB/s) — finer is noise. */
export const round = (x: number): number => Math.round(x * 1000) / 1000;
