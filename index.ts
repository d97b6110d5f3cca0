// The library API: the same jobs as the CLI, for programs that embed ArrowQuant.
//
//   import { plan, quantize, DiffusionQuantConfig } from 'arrowquant';
//   const cfg = new DiffusionQuantConfig({ enable_mixed_precision: true, target_model_size_mb: 3500 });
//   const summary = await quantize('model/', { output: 'model.arrow', config: cfg, onProgress: (p) => … });

import { DiffusionQuantConfig } from './core/config/diffusion-quant-config.js';
import { envOverrides, parsePartialConfig, resolveConfig } from './core/config/load.js';
import type { ArrowQuantConfig, PartialConfig } from './core/config/schema.js';
import { openModel } from './core/model/model-source.js';
import { loadCalibration } from './core/quant/calibration.js';
import { buildPlan, type Plan } from './core/plan/plan.js';
import { runLocalJob, type Progress, type RunSummary } from './coordinator/local-run.js';

export { DiffusionQuantConfig };
export type { ArrowQuantConfig, PartialConfig, LayerBits } from './core/config/schema.js';
export { DEFAULTS, PROFILES } from './core/config/schema.js';
export { resolveConfig, parseConfigYaml, configToYaml, loadConfigFile, envOverrides } from './core/config/load.js';
export { openModel, type ModelSource, type ModelTensor } from './core/model/model-source.js';
export { planToJson, type Plan, type LayerPlan } from './core/plan/plan.js';
export { OutputFileReader } from './core/format/output-reader.js';
export type { LayerRecord } from './core/format/layer-schema.js';
export type { Progress, RunSummary } from './coordinator/local-run.js';
export * from './core/errors.js';

export interface JobOptions {
  /** settings: a DiffusionQuantConfig, or plain keys of the configuration (validated) */
  config?: DiffusionQuantConfig | PartialConfig;
  /** apply ARROW_QUANT_* variables from this environment (default: none) */
  env?: NodeJS.ProcessEnv;
}

function effective(options: JobOptions): ArrowQuantConfig {
  const c = options.config ?? {};
  const base = c instanceof DiffusionQuantConfig ? c.toJSON() : parsePartialConfig(c, 'options.config');
  return resolveConfig(base, options.env ? envOverrides(options.env) : {});
}

/** The per-layer plan (headers only, no weights read). Throws InfeasibleTargetError, ConfigError, ModelFormatError. */
export function plan(model: string, options: JobOptions = {}): Plan {
  const cfg = effective(options);
  return buildPlan(openModel(model), cfg, cfg.calibration_path ? loadCalibration(cfg.calibration_path) : null);
}

/** Quantize `model` into `options.output` on this machine; resolves to the run's summary. */
export async function quantize(model: string, options: JobOptions & { output: string; onProgress?: (p: Progress) => void }): Promise<RunSummary> {
  return runLocalJob(model, { output: options.output, config: effective(options), onProgress: options.onProgress });
}
