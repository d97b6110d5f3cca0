// What every coordinator does around the layers, whoever quantizes them (local threads or
// cluster workers): prepare (plan, tasks, staging directory) and finish (size and quality
// checks, then merge the staged shards in canonical order into the output file).

import { accessSync, constants, existsSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { ArrowQuantConfig } from '../core/config/schema.js';
import { OutputError, QualityBarError, SizeBudgetError, UsageError } from '../core/errors.js';
import { buildLayerTasks, type LayerTask } from '../core/job/layer-task.js';
import { openModel, type ModelSource } from '../core/model/model-source.js';
import { buildPlan, type Plan } from '../core/plan/plan.js';
import { loadCalibration, type Calibration } from '../core/quant/calibration.js';
import { ArrowFileAssembler, decodeShard } from '../core/format/arrow-file.js';
import { fileMetadata, jobId, summarize, type FileSummary, type WrittenLayer } from './file-metadata.js';

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
  const model = openModel(modelPath);
  const calibration = cfg.calibration_path ? loadCalibration(cfg.calibration_path) : null;
  const plan = buildPlan(model, cfg, calibration);
  const id = jobId(model, cfg);
  return { id, model, cfg, calibration, plan, tasks: buildLayerTasks(id, model, plan, cfg, calibration), output: out };
}

/** Fail before any work when the output cannot be written. */
export function checkOutputPath(out: string): void {
  const dir = dirname(out);
  if (!existsSync(dir)) throw new OutputError(`cannot write ${out}: directory ${dir} does not exist`, out);
  if (!statSync(dir).isDirectory()) throw new OutputError(`cannot write ${out}: ${dir} is not a directory`, out);
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

/**
 * Size budget and job-level quality bar, then the merge. Nothing is written at the output path
 * unless every check passes and the merge completes.
 */
export async function finishJob(job: PreparedJob, layers: FinishedLayer[], shardPath: (index: number) => string): Promise<FileSummary> {
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
  const asm = await ArrowFileAssembler.create(job.output, fileMetadata(job.cfg, job.plan, job.model, summary));
  try {
    for (const l of ordered) {
      const shard = decodeShard(await readFile(shardPath(l.layerIndex)), `shard of layer ${l.layerIndex} (${l.name})`);
      if (shard.record.layer_name !== l.name || shard.record.layer_index !== l.layerIndex) {
        throw new OutputError(`staged shard for layer ${l.layerIndex} holds "${shard.record.layer_name}"`, job.output);
      }
      await asm.append(shard);
    }
    await asm.finish();
  } catch (e) {
    await asm.abort();
    throw e;
  }
  return summary;
}
