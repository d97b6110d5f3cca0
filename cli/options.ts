// Options shared by plan, quantize and submit, and how they become the effective configuration:
// defaults < profile < -c file < ARROW_QUANT_* < these options.

import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UsageError } from '../core/errors.js';
import { coerceScalar, envOverrides, loadConfigFile, parsePartialConfig, resolveConfig } from '../core/config/load.js';
import type { ArrowQuantConfig, ConfigKey, PartialConfig } from '../core/config/schema.js';

type Options = NonNullable<ParseArgsConfig['options']>;

export const COMMON_OPTIONS = {
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} satisfies Options;

export const CONFIG_OPTIONS = {
  config: { type: 'string', short: 'c' },
  profile: { type: 'string' },
  bits: { type: 'string' },
  'group-size': { type: 'string' },
  'mixed-precision': { type: 'boolean' },
  'target-size-mb': { type: 'string' },
  layer: { type: 'string', multiple: true },
  'skip-sensitive': { type: 'boolean' },
  strategy: { type: 'string' },
  calibration: { type: 'string' },
  threads: { type: 'string' },
  'fail-fast': { type: 'boolean' },
  refine: { type: 'string' },
  'double-quant': { type: 'boolean' },
} satisfies Options;

export const CONFIG_OPTIONS_HELP = `Configuration (override -c FILE, which overrides ARROW_QUANT_* and the profile):
  -c, --config FILE          YAML configuration (see config.example.yaml)
  --profile edge|local|cloud deployment profile
  --bits 2|4|8               default bit width
  --group-size N             32, 64, 128 or 256
  --mixed-precision          per-layer bit widths (the heuristic)
  --target-size-mb X         budget for bytes_out, in 10^6 bytes
  --layer NAME_OR_PATTERN=BITS   per-layer width (repeatable; re:<regex> or * globs)
  --skip-sensitive           keep embeddings, norms and heads as 16-bit floats
  --strategy heuristic|measured
  --calibration PATH         calibration statistics (JSON Lines or Arrow)
  --threads N                worker threads (0 = all cores)
  --fail-fast                a layer below its quality bar fails the job (exit 3)
  --refine none|search       clipping search for each group's scale and zero point
  --double-quant             format v2: integer group params under per-super-group float16 factors
                             (needs --group-size 16 or 32)`;

type Parsed<O extends Options> = ReturnType<typeof parseArgs<{ args: string[]; options: O; allowPositionals: true; strict: true }>>;

export function parseCommandArgs<O extends Options>(argv: string[], options: O, positionals: { min: number; max: number; usage: string }): Parsed<O> {
  let parsed: Parsed<O>;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (e) {
    throw new UsageError(`${(e as Error).message}\nusage: ${positionals.usage}`);
  }
  const help = (parsed.values as { help?: boolean }).help === true;
  if (!help && (parsed.positionals.length < positionals.min || parsed.positionals.length > positionals.max)) {
    throw new UsageError(`expected ${positionals.min === positionals.max ? positionals.min : `${positionals.min} to ${positionals.max}`} argument(s), got ${parsed.positionals.length}\nusage: ${positionals.usage}`);
  }
  return parsed;
}

type ConfigValues = { [K in keyof typeof CONFIG_OPTIONS]?: (typeof CONFIG_OPTIONS)[K] extends { multiple: true } ? string[] : (typeof CONFIG_OPTIONS)[K] extends { type: 'boolean' } ? boolean : string };

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
    if (typeof raw !== 'string') continue;
    const source = `command line --${flag}`;
    Object.assign(out, parsePartialConfig({ [key]: coerceScalar(raw, key, source) }, source));
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
