// Options shared by plan and quantize, and how they become the effective configuration:
// defaults < profile < -c file < ARROW_QUANT_* < these options.

import { Option, type Command } from 'commander';
import { coerceScalar, envOverrides, loadConfigFile, parsePartialConfig, resolveConfig } from '../core/config/load.js';
import { PROFILES, type ArrowQuantConfig, type ConfigKey, type PartialConfig } from '../core/config/schema.js';
import { UsageError } from '../core/errors.js';
import { collect, integerAtLeast } from './option-values.js';

/** The configuration options, in their own help section. */
export function addConfigOptions(cmd: Command): Command {
  cmd.optionsGroup('Configuration (these override -c FILE, which overrides ARROW_QUANT_* and the profile):');
  return cmd
    .option('-c, --config <file>', 'YAML configuration (see config.example.yaml)')
    .addOption(new Option('--profile <name>', 'deployment profile').choices(Object.keys(PROFILES)))
    .addOption(new Option('--bits <n>', 'default bit width').choices(['2', '4', '8']))
    .addOption(new Option('--group-size <n>', 'values per group (16 only with --double-quant)').choices(['16', '32', '64', '128', '256']))
    .option('--mixed-precision', 'per-layer bit widths (the heuristic or measured strategy)')
    .option('--target-size-mb <mb>', 'budget for bytes_out, in 10^6 bytes')
    .option('--layer <name=bits>', 'per-layer width, NAME_OR_PATTERN=BITS (repeatable; re:<regex> or * globs)', collect)
    .option('--skip-sensitive', 'keep embeddings, norms and heads as 16-bit floats')
    .addOption(new Option('--strategy <name>', 'how mixed precision picks widths').choices(['heuristic', 'measured']))
    .option('--calibration <path>', 'calibration statistics (JSON Lines or Arrow)')
    .option('--threads <n>', 'worker threads (0 = all cores)', integerAtLeast(0))
    .option('--fail-fast', 'a layer below its quality bar fails the job (exit 3)')
    .addOption(new Option('--refine <how>', "clipping search for each group's scale and zero point").choices(['none', 'search']))
    .option('--double-quant', 'format v2: integer group params under per-super-group float16 factors (needs --group-size 16 or 32)');
}

/** The values of the configuration options, keyed by flag name as on the command line. */
export interface ConfigValues {
  config?: string;
  profile?: string;
  bits?: string;
  'group-size'?: string;
  'mixed-precision'?: boolean;
  'target-size-mb'?: string;
  layer?: string[];
  'skip-sensitive'?: boolean;
  strategy?: string;
  calibration?: string;
  threads?: number | string;
  'fail-fast'?: boolean;
  refine?: string;
  'double-quant'?: boolean;
}

const SCALAR_FLAGS: [keyof ConfigValues, ConfigKey][] = [
  ['profile', 'deployment_profile'],
  ['bits', 'bit_width'],
  ['group-size', 'group_size'],
  ['target-size-mb', 'target_model_size_mb'],
  ['strategy', 'allocation_strategy'],
  ['calibration', 'calibration_path'],
  ['threads', 'num_threads'],
  ['refine', 'refine'],
];

/** The configuration the command-line options set, each validated with its flag named. */
export function cliOverrides(values: ConfigValues): PartialConfig {
  const out: PartialConfig = {};
  for (const [flag, key] of SCALAR_FLAGS) {
    const raw = values[flag];
    if (typeof raw !== 'string' && typeof raw !== 'number') continue;
    const source = `command line --${flag}`;
    Object.assign(out, parsePartialConfig({ [key]: coerceScalar(String(raw), key, source) }, source));
  }
  if (values['mixed-precision']) out.enable_mixed_precision = true;
  if (values['skip-sensitive']) out.skip_sensitive_layers = true;
  if (values['fail-fast']) out.fail_fast = true;
  if (values['double-quant']) out.double_quant = true;
  for (const spec of values.layer ?? []) {
    const eq = spec.lastIndexOf('=');
    const source = `command line --layer ${spec}`;
    if (eq <= 0) throw new UsageError(`${source}: expected NAME_OR_PATTERN=BITS, e.g. --layer 're:.*mlp.*=2'`);
    const widths = { ...(out.layer_bit_widths ?? {}), [spec.slice(0, eq)]: Number(spec.slice(eq + 1)) };
    out.layer_bit_widths = parsePartialConfig({ layer_bit_widths: widths }, source).layer_bit_widths!;
  }
  return out;
}

export function effectiveConfig(values: ConfigValues, env: NodeJS.ProcessEnv = process.env): ArrowQuantConfig {
  const file = values.config ? loadConfigFile(values.config) : {};
  return resolveConfig(file, envOverrides(env), cliOverrides(values));
}
