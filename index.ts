// The library API: the same jobs as the CLI, for programs that embed ArrowQuant. Every object it
// returns or hands to a callback uses snake_case keys, like the CLI's --json and the file's metadata.
//
//   import { plan, quantize, DiffusionQuantConfig } from 'arrowquant';
//   const cfg = new DiffusionQuantConfig({ enable_mixed_precision: true, target_model_size_mb: 3500 });
//   const summary = await quantize('model/', { output: 'model.arrow', config: cfg, onProgress: (p) => … });

import { DiffusionQuantConfig } from './core/config/diffusion-quant-config.js';
import { envOverrides, parsePartialConfig, resolveConfig } from './core/config/load.js';
import type { ArrowQuantConfig, LayerBits, PartialConfig } from './core/config/schema.js';
import { UsageError } from './core/errors.js';
import { openModel } from './core/model/model-source.js';
import { loadCalibration } from './core/quant/calibration.js';
import { buildPlan, configWarnings, planToJson, type QuantMethod } from './core/plan/plan.js';
import type { Modality } from './core/plan/modality.js';
import type { SourceDtype } from './core/quant/dtype.js';
import { runLocalJob, type RunSummary } from './coordinator/local-run.js';

export { DiffusionQuantConfig };
export type { ArrowQuantConfig, PartialConfig, LayerBits } from './core/config/schema.js';
export { DEFAULTS, PROFILES } from './core/config/schema.js';
export { resolveConfig, parseConfigYaml, configToYaml, loadConfigFile, envOverrides } from './core/config/load.js';
export { openModel, type ModelSource, type ModelTensor } from './core/model/model-source.js';
export { OutputFileReader } from './core/format/output-reader.js';
export type { LayerRecord } from './core/format/layer-schema.js';
export type { RunSummary } from './coordinator/local-run.js';
export * from './core/errors.js';

export interface JobOptions {
  /** settings: a DiffusionQuantConfig, or plain keys of the configuration (validated) */
  config?: DiffusionQuantConfig | PartialConfig;
  /** apply ARROW_QUANT_* variables from this environment (default: none) */
  env?: NodeJS.ProcessEnv;
}

export interface QuantizeOptions extends JobOptions {
  /** the Arrow file to write (its directory must exist); it appears only when the job succeeded */
  output: string;
  onProgress?: (p: Progress) => void;
}

/** One layer of a plan: the same keys as `arrowquant plan --json`. */
export interface PlannedLayer {
  name: string;
  shape: number[];
  dtype: SourceDtype;
  bits: LayerBits;
  method: QuantMethod;
  group_size: number;
  bytes_in: number;
  bytes_out: number;
  reason: string;
  notes?: string[];
}

/** The per-layer plan and its totals: the same document as `arrowquant plan --json`. */
export interface PlanResult {
  layers: PlannedLayer[];
  total_bytes_in: number;
  total_bytes_out: number;
  target_bytes: number | null;
  target_met: boolean;
  modality: Modality | null;
  warnings: string[];
}

/** Handed to onProgress after each layer. */
export interface Progress {
  layers_done: number;
  layers_total: number;
  bytes_done: number;
  bytes_total: number;
  /** the layer that just finished */
  layer: string;
}

/** The run's summary, as `arrowquant quantize --json` prints it. */
export interface QuantizeSummary extends RunSummary {
  /** what the configuration asked for in vain (e.g. layer_bit_widths with mixed precision off) */
  warnings: string[];
}

function checkModel(fn: string, model: unknown): string {
  if (typeof model !== 'string' || model === '') {
    throw new UsageError(`${fn}(model, options): model must be the path of a .safetensors file or a sharded model directory, got ${describe(model)}`);
  }
  return model;
}

function checkOptions(fn: string, options: unknown): Record<string, unknown> {
  if (options === undefined) return {};
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new UsageError(`${fn}(model, options): options must be an object, got ${describe(options)}`);
  }
  return options as Record<string, unknown>;
}

function describe(v: unknown): string {
  if (v === null || v === undefined) return String(v);
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'string' ? JSON.stringify(v) : `a ${typeof v}`;
}

function effective(options: Record<string, unknown>): ArrowQuantConfig {
  const c = options.config ?? {};
  const base = c instanceof DiffusionQuantConfig ? c.toJSON() : parsePartialConfig(c, 'options.config');
  return resolveConfig(base, options.env ? envOverrides(options.env as NodeJS.ProcessEnv) : {});
}

/** The per-layer plan (headers only, no weights read). Throws UsageError, InfeasibleTargetError, ConfigError, ModelFormatError. */
export function plan(model: string, options: JobOptions = {}): PlanResult {
  const path = checkModel('plan', model);
  const cfg = effective(checkOptions('plan', options));
  return planToJson(buildPlan(openModel(path), cfg, cfg.calibration_path ? loadCalibration(cfg.calibration_path) : null)) as PlanResult;
}

/** Quantize `model` into `options.output` on this machine; resolves to the run's summary. */
export async function quantize(model: string, options: QuantizeOptions): Promise<QuantizeSummary> {
  const path = checkModel('quantize', model);
  const o = checkOptions('quantize', options);
  if (typeof o.output !== 'string' || o.output === '') {
    throw new UsageError(`quantize(model, options): options.output must be the path of the Arrow file to write, got ${describe(o.output)}`);
  }
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') {
    throw new UsageError(`quantize(model, options): options.onProgress must be a function, got ${describe(o.onProgress)}`);
  }
  const cfg = effective(o);
  const onProgress = o.onProgress as ((p: Progress) => void) | undefined;
  const warnings = configWarnings(openModel(path), cfg, cfg.calibration_path !== null);
  const summary = await runLocalJob(path, {
    output: o.output,
    config: cfg,
    onWarning: (w) => warnings.push(w),
    onProgress: onProgress && ((p) => onProgress({ layers_done: p.layersDone, layers_total: p.layersTotal, bytes_done: p.bytesDone, bytes_total: p.bytesTotal, layer: p.layer })),
  });
  return { ...summary, warnings };
}
