// The global plan: for every tensor in canonical order, its bit width, method, group size and
// exact bytes_out — computed from headers, the configuration and the calibration statistics,
// before any weight is read.

import type { ArrowQuantConfig, LayerBits } from '../config/schema.js';
import type { SourceDtype } from '../quant/dtype.js';
import type { Calibration } from '../quant/calibration.js';
import { matrixView, type ModelSource } from '../model/model-source.js';
import { allocateBitWidths } from './bit-allocation.js';
import { layerBytesOut, type MethodExtras } from './layer-bytes.js';
import { detectModality, type Modality } from './modality.js';
import type { AllocationSummary } from './allocation-summary.js';
import { LayerPatternMap } from './layer-patterns.js';

export type QuantMethod = 'base' | 'spatial' | 'time_aware' | 'none';

export interface LayerPlan {
  index: number;
  name: string;
  shape: number[];
  dtype: SourceDtype;
  rows: number;
  cols: number;
  bytesIn: number;
  bits: LayerBits;
  method: QuantMethod;
  /** 0 when not quantized */
  groupSize: number;
  bytesOut: number;
  reason: string;
  /** method fallbacks and other remarks, carried to the file's `notes` */
  notes: string[];
  /** time-aware: number of timestep groups */
  timeGroups: number;
  sensitive: boolean;
  manual: boolean;
}

export interface Plan {
  modality: Modality | null;
  layers: LayerPlan[];
  totalBytesIn: number;
  totalBytesOut: number;
  targetBytes: number | null;
  targetMet: boolean;
  warnings: string[];
  /** allocation_strategy measured: what the optimiser predicted (stored in the file) */
  allocation?: AllocationSummary;
  /** allocation_strategy measured: how many measurements ran and how many came from the cache (never in the file) */
  measurements?: { measured: number; cached: number; cacheDir: string | null };
}

interface MethodChoice {
  method: Exclude<QuantMethod, 'none'>;
  extras: MethodExtras;
  timeGroups: number;
  notes: string[];
}

/** The method a layer gets if it is quantized, with the statistics the calibration has for it. */
export function chooseMethod(name: string, shape: readonly number[], cfg: ArrowQuantConfig, cal: Calibration | null): MethodChoice {
  const notes: string[] = [];
  const stats = cal?.get(name);
  if (cfg.enable_spatial) {
    const absmax = stats?.channelAbsmax;
    if (!absmax) notes.push('spatial: no channel_absmax in the calibration for this layer; quantized with base');
    else if (shape.length !== 2) notes.push(`spatial: applies to 2-D weights [out, in], this one has shape [${shape.join(', ')}]; quantized with base`);
    else if (absmax.length !== shape[1]) notes.push(`spatial: channel_absmax has ${absmax.length} entries but the layer has ${shape[1]} input channels; quantized with base`);
    else return { method: 'spatial', extras: { equalizationScales: shape[1]!, timeGroups: 0 }, timeGroups: 0, notes };
  }
  if (cfg.enable_time_aware) {
    const steps = stats?.timesteps.size ?? 0;
    if (steps === 0) notes.push('time_aware: no timestep ranges in the calibration for this layer; quantized with base');
    else {
      const groups = Math.min(cfg.num_time_groups, steps);
      return { method: 'time_aware', extras: { equalizationScales: 0, timeGroups: groups }, timeGroups: groups, notes };
    }
  }
  return { method: 'base', extras: { equalizationScales: 0, timeGroups: 0 }, timeGroups: 0, notes };
}

/**
 * What the configuration asks for that will not happen on this model: quantize prints these too
 * (its plan is built inside the job), so they are computed apart from the plan.
 */
export function configWarnings(model: ModelSource, cfg: ArrowQuantConfig, hasCalibration: boolean): string[] {
  const warnings: string[] = [];
  const keys = Object.keys(cfg.layer_bit_widths);
  if (!cfg.enable_mixed_precision && keys.length > 0) {
    warnings.push(`layer_bit_widths (${keys.join(', ')}) is ignored: enable_mixed_precision is off (add --mixed-precision)`);
  }
  for (const key of keys) {
    const map = new LayerPatternMap({ [key]: true });
    if (!model.tensors.some((t) => map.lookup(t.name))) warnings.push(`layer_bit_widths key ${JSON.stringify(key)} matches no tensor of ${model.name}`);
  }
  if (!cfg.enable_mixed_precision && cfg.allocation_strategy === 'measured') {
    warnings.push('allocation_strategy measured has no effect: enable_mixed_precision is off');
  }
  if ((cfg.enable_spatial || cfg.enable_time_aware) && !hasCalibration) {
    warnings.push('spatial / time-aware methods need calibration_path; every layer is quantized with base');
  }
  return warnings;
}

export function buildPlan(model: ModelSource, cfg: ArrowQuantConfig, cal: Calibration | null): Plan {
  const warnings = configWarnings(model, cfg, cal !== null);
  const geometry = model.tensors.map((t) => ({ ...matrixView(t.shape), name: t.name }));
  const methods = model.tensors.map((t) => chooseMethod(t.name, t.shape, cfg, cal));
  const alloc = allocateBitWidths(
    geometry.map((g, i) => ({ ...g, extras: methods[i]!.extras })),
    cfg,
  );
  const layers: LayerPlan[] = model.tensors.map((t, i) => {
    const a = alloc.allocations[i]!;
    const m = methods[i]!;
    const quantized = a.bits < 16;
    const g = geometry[i]!;
    return {
      index: t.index,
      name: t.name,
      shape: t.shape,
      dtype: t.dtype,
      rows: g.rows,
      cols: g.cols,
      bytesIn: t.byteLength,
      bits: a.bits,
      method: quantized ? m.method : 'none',
      groupSize: quantized ? cfg.group_size : 0,
      bytesOut: layerBytesOut(g, a.bits, cfg.group_size, m.extras),
      reason: a.reason,
      notes: quantized ? m.notes : [],
      timeGroups: quantized ? m.timeGroups : 0,
      sensitive: a.sensitive,
      manual: a.manual,
    };
  });
  return {
    modality: cfg.modality ?? detectModality(model.metadata, model.tensors.map((t) => t.name)),
    layers,
    totalBytesIn: layers.reduce((s, l) => s + l.bytesIn, 0),
    totalBytesOut: alloc.bytesOut,
    targetBytes: alloc.targetBytes,
    targetMet: alloc.targetMet,
    warnings,
  };
}

/** `plan --json` of interfaces.md (plus notes and modality). */
export function planToJson(plan: Plan): object {
  return {
    layers: plan.layers.map((l) => ({
      name: l.name,
      shape: l.shape,
      dtype: l.dtype,
      bits: l.bits,
      method: l.method,
      group_size: l.groupSize,
      bytes_in: l.bytesIn,
      bytes_out: l.bytesOut,
      reason: l.reason,
      ...(l.notes.length ? { notes: l.notes } : {}),
    })),
    total_bytes_in: plan.totalBytesIn,
    total_bytes_out: plan.totalBytesOut,
    target_bytes: plan.targetBytes,
    target_met: plan.targetMet,
    modality: plan.modality,
    warnings: plan.warnings,
    ...(plan.allocation ? { allocation: plan.allocation } : {}),
    ...(plan.measurements ? { measurements: { measured: plan.measurements.measured, cached: plan.measurements.cached, cache_dir: plan.measurements.cacheDir } } : {}),
  };
}
