// What every coordinator does around the layers, whoever quantizes them (local threads or
// cluster workers): prepare (plan, tasks, staging directory) and finish (size and quality
// checks, then merge the staged shards in canonical order into the output file).

import { assertOutputIsNotInput } from '../core/model/output-guard.js';
import { accessSync, constants, existsSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { ArrowQuantConfig } from '../core/config/schema.js';
import { OutputError, QualityBarError, SizeBudgetError, UsageError } from '../core/errors.js';
import { buildLayerTasks, type LayerTask } from '../core/job/layer-task.js';
import { openModel, type ModelSource } from '../core/model/model-source.js';
import { buildPlan, type Plan } from '../core/plan/plan.js';
import { loadCalibration, type Calibration } from '../core/quant/calibration.js';
import { ArrowFileAssembler, schemaReservation, type BatchMessage } from '../core/format/arrow-file.js';
import { fileMetadata, jobId, summarize, widestSummary, type FileSummary, type WrittenLayer } from './file-metadata.js';

export interface PreparedJob {
  id: string;
  model: ModelSource;
  cfg: ArrowQuantConfig;
  calibration: Calibration | null;
  plan: Plan;
  tasks: LayerTask[];
  output: string;
}

export function prepareJob(modelPath: string, cfg: ArrowQuantConfig, output: string): PreparedJob {
  const out = resolve(output);
  checkOutputPath(out);
  const job = prepareJobForPlan(modelPath, cfg);
  assertOutputIsNotInput(job.model, out);
  return { ...job, output: out };
}

/** A job without an output (for planning). */
export function prepareJobForPlan(modelPath: string, cfg: ArrowQuantConfig): PreparedJob {
  const model = openModel(modelPath);
  const calibration = cfg.calibration_path ? loadCalibration(cfg.calibration_path) : null;
  const plan = buildPlan(model, cfg, calibration);
  const id = jobId(model, cfg);
  return { id, model, cfg, calibration, plan, tasks: buildLayerTasks(id, model, plan, cfg, calibration), output: '' };
}

/** Fail before any work when the output cannot be written. */
export function checkOutputPath(out: string): void {
  const dir = dirname(out);
  // a directory that is not there is bad usage (exit 2), not a failure while writing
  if (!existsSync(dir)) throw new UsageError(`cannot write ${out}: directory ${dir} does not exist (create it first)`);
  if (!statSync(dir).isDirectory()) throw new UsageError(`cannot write ${out}: ${dir} is not a directory`);
  if (existsSync(out) && statSync(out).isDirectory()) throw new UsageError(`output ${out} is a directory; give a file name, e.g. ${join(out, 'model.arrow')}`);
  try {
    accessSync(dir, constants.W_OK);
  } catch {
    throw new OutputError(`cannot write ${out}: directory ${dir} is not writable`, out);
  }
}

/** A layer as the coordinator recorded it (from the worker's outcome or the uploaded shard). */
export interface FinishedLayer extends WrittenLayer {
  layerIndex: number;
  name: string;
  notes: string[];
}

/** Size budget and job-level quality bar over the finished layers; the summary when both pass. */
export function checkJob(job: PreparedJob, layers: FinishedLayer[]): FileSummary {
  const ordered = [...layers].sort((a, b) => a.layerIndex - b.layerIndex);
  const summary = summarize(ordered);
  const target = job.plan.targetBytes;
  if (target !== null && summary.bytes_out > target) {
    const fallbacks = ordered.filter((l) => l.bits !== l.plannedBits);
    throw new SizeBudgetError(
      `quality fallbacks pushed bytes_out to ${summary.bytes_out}, over the target ${target} bytes; layers redone at more bits: ${fallbacks
        .map((l) => `${l.name} (${l.plannedBits}→${l.bits})`)
        .join(', ')}. Lower min_layer_cosine or raise target_model_size_mb.`,
      fallbacks.map((l) => l.name),
      summary.bytes_out,
      target,
    );
  }
  if (summary.weighted_cosine !== null && summary.weighted_cosine < job.cfg.min_accuracy) {
    const worst = ordered.filter((l) => l.bits < 16).sort((a, b) => a.cosine - b.cosine).slice(0, 3);
    throw new QualityBarError(
      `the parameter-weighted mean cosine of the quantized layers is ${summary.weighted_cosine.toFixed(4)}, below min_accuracy ${job.cfg.min_accuracy}; lowest: ${worst
        .map((l) => `${l.name} ${l.cosine.toFixed(4)}`)
        .join(', ')}`,
    );
  }
  return summary;
}

/**
 * The output file of a job, written layer by layer in canonical order as layers become
 * available, whatever order they finish in. Nothing appears at the output path unless every
 * check passes and the file is complete.
 */
export class OrderedOutput {
  private next = 0;
  private readonly turns = new Map<number, { resolve: () => void; reject: (e: unknown) => void }>();
  private failure: unknown = null;
  private chain: Promise<void> = Promise.resolve();

  private constructor(
    private readonly job: PreparedJob,
    private readonly asm: ArrowFileAssembler,
  ) {}

  /** `tmp`: the file written until finish() renames it into place (default `<output>.tmp-<pid>`). */
  static async create(job: PreparedJob, tmp?: string): Promise<OrderedOutput> {
    return new OrderedOutput(job, await ArrowFileAssembler.create(job.output, reservation(job), tmp));
  }

  /** Continue the partial file `tmp` after its first `blocks.length` layers (checked by the caller). */
  static async reopen(job: PreparedJob, tmp: string, blocks: readonly { metaDataLength: number; bodyLength: number; offset: number }[]): Promise<OrderedOutput> {
    const out = new OrderedOutput(job, await ArrowFileAssembler.reopen(job.output, reservation(job), tmp, blocks));
    out.next = blocks.length;
    return out;
  }

  /** Where the next layer's record batch message will start in the file. */
  get nextOffset(): number {
    return this.asm.nextOffset;
  }

  /** Layers written so far (the next one expected is this index). */
  get written(): number {
    return this.next;
  }

  /** Resolves once every layer before `index` has been written; rejects once the job has failed. */
  turn(index: number): Promise<void> {
    if (this.failure !== null) return Promise.reject(this.failure);
    if (index <= this.next) return Promise.resolve();
    return new Promise((resolve, reject) => this.turns.set(index, { resolve, reject }));
  }

  /** The job failed: layers waiting for their turn stop waiting. */
  fail(e: unknown): void {
    this.failure ??= e;
    for (const t of this.turns.values()) t.reject(this.failure);
    this.turns.clear();
  }

  /** Write layer `index`, which must be the next one. */
  async append(index: number, msg: BatchMessage): Promise<void> {
    if (index !== this.next) throw new OutputError(`layer ${index} written out of order (expected ${this.next})`, this.job.output);
    await this.asm.append(msg);
    this.advance();
  }

  /**
   * Write every consecutive staged layer from the next one on. `staged(i)` gives its shard: bytes
   * still in memory, else its file; null when it is not staged yet. `written` hears of each
   * shard once its bytes are in the file (or failed to get there).
   */
  appendStaged(staged: (index: number) => Uint8Array | string | null, written?: (shard: Uint8Array | string) => void): Promise<void> {
    this.chain = this.chain.then(async () => {
      for (let shard = staged(this.next); shard !== null; shard = staged(this.next)) {
        const what = `staged shard of layer ${this.next}`;
        try {
          if (typeof shard === 'string') await this.asm.appendShardFile(shard, what);
          else await this.asm.appendShardBytes(shard, what);
        } finally {
          written?.(shard);
        }
        this.advance();
      }
    });
    return this.chain;
  }

  /** Write part of layer `index`'s message, which must be the next one, straight into the file (ArrowFileAssembler.writeAhead). */
  async writeAhead(index: number, pieces: readonly Uint8Array[], at: number): Promise<void> {
    if (index !== this.next) throw new OutputError(`layer ${index} written ahead out of order (expected ${this.next})`, this.job.output);
    await this.asm.writeAhead(pieces, at);
  }

  /** Layer `index`'s message was written by writeAhead: once it is in the file, it counts as written. */
  async commitAhead(index: number, metaDataLength: number, bodyLength: number): Promise<void> {
    if (index !== this.next) throw new OutputError(`layer ${index} committed out of order (expected ${this.next})`, this.job.output);
    await this.asm.commitAhead(metaDataLength, bodyLength);
    this.advance();
  }

  private advance(): void {
    this.next++;
    this.turns.get(this.next)?.resolve();
    this.turns.delete(this.next);
  }

  /** Checks, then the schema metadata and footer; the file appears at the output path. */
  async finish(layers: FinishedLayer[]): Promise<FileSummary> {
    await this.chain;
    try {
      if (this.next !== this.job.tasks.length) {
        throw new OutputError(`only ${this.next} of ${this.job.tasks.length} layers were written`, this.job.output);
      }
      const summary = checkJob(this.job, layers);
      await this.asm.finish(fileMetadata(this.job.cfg, this.job.plan, this.job.model, summary));
      return summary;
    } catch (e) {
      await this.asm.abort();
      throw e;
    }
  }

  async abort(): Promise<void> {
    await this.chain.catch(() => undefined);
    await this.asm.abort();
  }

  /** Stop writing but keep the partial file (a cluster job that can be resumed). */
  async detach(): Promise<void> {
    await this.chain.catch(() => undefined);
    await this.asm.detach();
  }
}

/** The schema region's size: a function of the plan alone, so a reopened file has the same. */
export function reservation(job: PreparedJob): number {
  return schemaReservation(fileMetadata(job.cfg, job.plan, job.model, widestSummary()));
}
