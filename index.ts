// The library API: the same jobs as the CLI, for programs that embed ArrowQuant.
export { DiffusionQuantConfig } from './core/config/diffusion-quant-config.js';
export type { ArrowQuantConfig, PartialConfig, LayerBits } from './core/config/schema.js';
export { DEFAULTS, PROFILES } from './core/config/schema.js';
export { resolveConfig, parseConfigYaml, configToYaml, loadConfigFile, envOverrides } from './core/config/load.js';
export { openModel, type ModelSource, type ModelTensor } from './core/model/model-source.js';
export { buildPlan, planToJson, type Plan, type LayerPlan } from './core/plan/plan.js';
export * from './core/errors.js';
