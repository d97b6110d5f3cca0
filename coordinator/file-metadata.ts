// The schema metadata of the output file (format.md) and the job's identity. Only what can
// change the result goes in: no paths, thread counts, hosts, kernels or times, so the file is
// byte-identical however the job ran.

import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import type { ArrowQuantConfig } from '../core/config/schema.js';
import type { ModelSource } from '../core/model/model-source.js';
import type { Plan } from '../core/plan/plan.js';

export const FORMAT_VERSION = '1';
/** A file where some quantized layer uses double-quantized group parameters (format.md "Version 2"). */
export const FORMAT_VERSION_DOUBLE_QUANT = '2';

/** Effective quantization settings: every field that can change the output, defaults filled in. */
export function resultConfig(cfg: ArrowQuantConfig): Record<string, unknown> {
  // double_quant appears only when on, so that a v1 job's metadata (and job id) stay as before it existed.
  const { num_threads: _threads, calibration_path, double_quant, ...settings } = cfg;
  return {
    ...settings,
    ...(double_quant ? { double_quant } : {}),
    calibration_sha256: calibration_path ? createHash('sha256').update(readFileSync(calibration_path)).digest('hex') : null,
  };
}

/** Same model headers + same effective settings = same job (what a restarted coordinator resumes). */
export function jobId(model: ModelSource, cfg: ArrowQuantConfig): string {
  return createHash('sha256').update(model.headersSha256).update(JSON.stringify(resultConfig(cfg))).digest('hex').slice(0, 24);
}

export function planMetadata(plan: Plan): object[] {
  return plan.layers.map((l) => ({
    name: l.name,
    bits: l.bits,
    method: l.method,
    group_size: l.groupSize,
    planned_bytes: l.bytesOut,
    reason: l.reason,
  }));
}

export function sourceMetadata(model: ModelSource): object {
  return {
    model: model.name,
    files: model.shards.map((s) => basename(s.file)),
    total_bytes: model.totalBytes,
    headers_sha256: model.headersSha256,
  };
}

/** What the summary is computed from: each layer as written. */
export interface WrittenLayer {
  elements: number;
  bits: number;
  plannedBits: number;
  bytesIn: number;
  bytesOut: number;
  sqnrDb: number;
  cosine: number;
}

export interface FileSummary {
  layers: number;
  bytes_in: number;
  bytes_out: number;
  compression_ratio: number;
  layers_per_bit_width: Record<string, number>;
  /** parameter-weighted mean of sqnr_db over the quantized layers (exact layers excluded) */
  weighted_sqnr_db: number | null;
  /** parameter-weighted mean cosine over the quantized layers: what min_accuracy bounds */
  weighted_cosine: number | null;
  fallback_layers: number;
}

/** In canonical order, in float64: the same layers always give the same summary. */
export function summarize(layers: readonly WrittenLayer[]): FileSummary {
  const perBits: Record<string, number> = {};
  let bytesIn = 0;
  let bytesOut = 0;
  let sqnrSum = 0;
  let sqnrWeight = 0;
  let cosSum = 0;
  let cosWeight = 0;
  let fallbacks = 0;
  for (const l of layers) {
    perBits[String(l.bits)] = (perBits[String(l.bits)] ?? 0) + 1;
    bytesIn += l.bytesIn;
    bytesOut += l.bytesOut;
    if (l.bits !== l.plannedBits) fallbacks++;
    if (l.bits < 16) {
      cosSum += l.elements * l.cosine;
      cosWeight += l.elements;
      if (Number.isFinite(l.sqnrDb)) {
        sqnrSum += l.elements * l.sqnrDb;
        sqnrWeight += l.elements;
      }
    }
  }
  return {
    layers: layers.length,
    bytes_in: bytesIn,
    bytes_out: bytesOut,
    compression_ratio: bytesOut ? Number((bytesIn / bytesOut).toFixed(4)) : 0,
    layers_per_bit_width: Object.fromEntries(Object.entries(perBits).sort((a, b) => Number(a[0]) - Number(b[0]))),
    weighted_sqnr_db: sqnrWeight ? Number((sqnrSum / sqnrWeight).toFixed(4)) : null,
    weighted_cosine: cosWeight ? Number((cosSum / cosWeight).toFixed(6)) : null,
    fallback_layers: fallbacks,
  };
}

/**
 * A summary at least as long, once serialized, as any real one (every number at its widest):
 * what the output reserves room for before the real summary is known.
 */
export function widestSummary(): FileSummary {
  const wide = 'x'.repeat(24) as unknown as number;
  return {
    layers: wide, bytes_in: wide, bytes_out: wide, compression_ratio: wide,
    layers_per_bit_width: { 2: wide, 4: wide, 8: wide, 16: wide, 32: wide },
    weighted_sqnr_db: wide, weighted_cosine: wide, fallback_layers: wide,
  };
}

export function formatVersion(cfg: ArrowQuantConfig, plan: Plan): string {
  return plan.layers.some((l) => l.bits < 16 && (l.doubleQuant ?? cfg.double_quant)) ? FORMAT_VERSION_DOUBLE_QUANT : FORMAT_VERSION;
}

export function fileMetadata(cfg: ArrowQuantConfig, plan: Plan, model: ModelSource, summary: FileSummary): Map<string, string> {
  return new Map([
    ['arrowquant.format_version', formatVersion(cfg, plan)],
    ['arrowquant.config', JSON.stringify(resultConfig(cfg))],
    ['arrowquant.plan', JSON.stringify(planMetadata(plan))],
    ['arrowquant.source', JSON.stringify(sourceMetadata(model))],
    ['arrowquant.summary', JSON.stringify(summary)],
    // allocation_strategy measured: the optimiser's prediction and size–error curve (for `report`)
    ...(plan.allocation ? [['arrowquant.allocation', JSON.stringify(plan.allocation)] as [string, string]] : []),
  ]);
}
