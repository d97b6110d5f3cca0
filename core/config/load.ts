// Configuration sources and their merge: defaults < profile < YAML file < ARROW_QUANT_*
// environment variables < command-line options. Every value passes the zod schema; every
// error names the source, the key and the allowed values.

import { readFileSync } from 'node:fs';
import { dump, load } from 'js-yaml';
import type { z } from 'zod';
import { ConfigError } from '../errors.js';
import {
  CONFIG_KEYS, DEFAULTS, DEFAULT_MIN_LAYER_COSINE, KEY_INFO, PROFILES, configSchema,
  type ArrowQuantConfig, type ConfigKey, type PartialConfig,
} from './schema.js';

const partialSchema = configSchema.partial().strict();

/** Validate a partial configuration object from `source` (a file name, "environment …", "--bits"). */
export function parsePartialConfig(value: unknown, source: string): PartialConfig {
  if (value === null || value === undefined) return {};
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new ConfigError(`${source}: the configuration must be a mapping of keys to values`, '', source);
  }
  const r = partialSchema.safeParse(value);
  if (r.success) return r.data;
  throw issueToError(r.error.issues[0]!, value as Record<string, unknown>, source);
}

function issueToError(issue: z.core.$ZodIssue, value: Record<string, unknown>, source: string): ConfigError {
  const path = issue.path.map(String);
  if (issue.code === 'unrecognized_keys') {
    const key = issue.keys[0]!;
    if (path.length === 0) {
      const near = closest(key, CONFIG_KEYS);
      return new ConfigError(
        `${source}: unknown key "${key}"${near ? ` (did you mean "${near}"?)` : ''}; allowed keys: ${CONFIG_KEYS.join(', ')}`,
        key,
        source,
      );
    }
    return new ConfigError(`${source}: ${path.join('.')}: unknown key "${key}"; allowed: ${KEY_INFO[path[0] as ConfigKey].allowed}`, `${path.join('.')}.${key}`, source);
  }
  const top = path[0] as ConfigKey;
  if (issue.code === 'invalid_key') {
    const inner = issue.issues[0]?.message ?? 'invalid key';
    return new ConfigError(`${source}: ${top} key ${JSON.stringify(path[1])}: ${inner}`, path.join('.'), source);
  }
  let v: unknown = value;
  for (const p of path) v = (v as Record<string, unknown> | undefined)?.[p];
  const where = path.length > 1 ? `${top}[${JSON.stringify(path.slice(1).join('.'))}]` : top;
  const detail = issue.code === 'custom' ? ` (${issue.message})` : '';
  const allowed = path.length > 1 ? (ENTRY_ALLOWED[top] ?? KEY_INFO[top].allowed) : KEY_INFO[top].allowed;
  return new ConfigError(`${source}: ${where}: ${JSON.stringify(v)} is not allowed${detail}; allowed: ${allowed}`, path.join('.'), source);
}

/** Allowed values of one entry of a map or list key. */
const ENTRY_ALLOWED: Partial<Record<ConfigKey, string>> = {
  layer_bit_widths: '2, 4, 8, 16',
  min_layer_cosine: 'a number in 0..1',
  sensitive_layer_patterns: 'a valid regular expression',
  sensitive_layer_names: 'a string',
};

function closest(word: string, candidates: readonly string[]): string | null {
  let best: string | null = null;
  let bestD = Math.max(2, Math.floor(word.length / 3)) + 1;
  for (const c of candidates) {
    const d = editDistance(word, c);
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  const dp = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = dp[0]!;
    dp[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = dp[j]!;
      dp[j] = Math.min(dp[j]! + 1, dp[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return dp[b.length]!;
}

/** Parse YAML text; `source` names it in errors. */
export function parseConfigYaml(text: string, source: string): PartialConfig {
  let doc: unknown;
  try {
    doc = load(text);
  } catch (e) {
    throw new ConfigError(`${source}: not valid YAML (${(e as Error).message.split('\n')[0]})`, '', source);
  }
  return parsePartialConfig(doc, source);
}

export function loadConfigFile(path: string): PartialConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read config file ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, '', path);
  }
  return parseConfigYaml(text, path);
}

/** YAML of a full configuration, every key in schema order; parseConfigYaml reads it back equal. */
export function configToYaml(cfg: ArrowQuantConfig): string {
  const ordered: Record<string, unknown> = {};
  for (const k of CONFIG_KEYS) ordered[k] = cfg[k];
  return dump(ordered, { lineWidth: 120, noRefs: true });
}

/** ARROW_QUANT_* variables of interfaces.md, each validated on its own so errors name it. */
export const ENV_KEYS: Record<string, ConfigKey> = {
  ARROW_QUANT_BIT_WIDTH: 'bit_width',
  ARROW_QUANT_GROUP_SIZE: 'group_size',
  ARROW_QUANT_NUM_TIME_GROUPS: 'num_time_groups',
  ARROW_QUANT_MIN_ACCURACY: 'min_accuracy',
  ARROW_QUANT_FAIL_FAST: 'fail_fast',
  ARROW_QUANT_NUM_THREADS: 'num_threads',
  ARROW_QUANT_TARGET_MODEL_SIZE_MB: 'target_model_size_mb',
};

export function envOverrides(env: NodeJS.ProcessEnv = process.env): PartialConfig {
  const out: PartialConfig = {};
  for (const [name, key] of Object.entries(ENV_KEYS)) {
    const raw = env[name];
    if (raw === undefined) continue;
    const source = `environment variable ${name}`;
    Object.assign(out, parsePartialConfig({ [key]: coerceScalar(raw, key, source) }, source));
  }
  return out;
}

/** Turn a string (environment, command line) into the JSON type its key expects. */
export function coerceScalar(raw: string, key: ConfigKey, source: string): unknown {
  const d = DEFAULTS[key];
  const text = raw.trim();
  if (typeof d === 'boolean') {
    if (/^(1|true|yes|on)$/i.test(text)) return true;
    if (/^(0|false|no|off)$/i.test(text)) return false;
  } else if (typeof d === 'number' || key === 'target_model_size_mb') {
    if (key === 'target_model_size_mb' && /^(|null|none)$/i.test(text)) return null;
    if (text !== '' && Number.isFinite(Number(text))) return Number(text);
  } else {
    if ((key === 'calibration_path' || key === 'modality') && /^(|null)$/i.test(text)) return null;
    return text;
  }
  throw new ConfigError(`${source}: ${JSON.stringify(raw)} is not allowed; allowed: ${KEY_INFO[key].allowed}`, key, source);
}

/** group_size 16 exists only in format v2; v2 groups are 16 or 32 elements. */
function checkGroupEncoding(cfg: ArrowQuantConfig): void {
  if (cfg.double_quant && cfg.group_size !== 16 && cfg.group_size !== 32) {
    throw new ConfigError(`double_quant: true needs group_size 16 or 32, but group_size is ${cfg.group_size}; allowed: 16, 32`, 'group_size', 'configuration');
  }
  if (!cfg.double_quant && cfg.group_size === 16) {
    throw new ConfigError('group_size 16 needs double_quant: true (format v2); without it allowed: 32, 64, 128, 256', 'group_size', 'configuration');
  }
}

/** Merge sources in precedence order; maps (layer_bit_widths, min_layer_cosine) merge per entry. */
export function resolveConfig(...sources: PartialConfig[]): ArrowQuantConfig {
  const explicit: PartialConfig = {};
  const layerWidths: Record<string, 2 | 4 | 8 | 16> = {};
  const minCos: Partial<Record<2 | 4 | 8, number>> = {};
  for (const s of sources) {
    Object.assign(explicit, s);
    Object.assign(layerWidths, s.layer_bit_widths ?? {});
    Object.assign(minCos, s.min_layer_cosine ?? {});
  }
  const profile = explicit.deployment_profile ?? DEFAULTS.deployment_profile;
  const cfg: ArrowQuantConfig = {
    ...structuredClone(DEFAULTS),
    ...PROFILES[profile],
    ...explicit,
    deployment_profile: profile,
    layer_bit_widths: layerWidths,
    min_layer_cosine: { ...DEFAULT_MIN_LAYER_COSINE, ...minCos },
  };
  checkGroupEncoding(cfg);
  return cfg;
}
