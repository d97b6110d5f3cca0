// Every configuration key of interfaces.md: its zod schema, default, allowed values (for error
// messages and documentation) and the deployment profiles.

import { z } from 'zod';

export const PROFILES = {
  edge: { bit_width: 2, group_size: 256, num_time_groups: 5, min_accuracy: 0.65 },
  local: { bit_width: 4, group_size: 128, num_time_groups: 10, min_accuracy: 0.85 },
  cloud: { bit_width: 8, group_size: 64, num_time_groups: 20, min_accuracy: 0.95 },
} as const;
export type ProfileName = keyof typeof PROFILES;

const literalUnion = <T extends readonly (string | number)[]>(values: T) =>
  z.union(values.map((v) => z.literal(v)) as unknown as [z.ZodLiteral<T[number]>, z.ZodLiteral<T[number]>]);

export const LAYER_BITS = [2, 4, 8, 16] as const;
export type LayerBits = (typeof LAYER_BITS)[number];

const isRegex = (src: string) => {
  try {
    new RegExp(src);
    return true;
  } catch {
    return false;
  }
};

const layerKey = z.string().refine((k) => !k.startsWith('re:') || isRegex(k.slice(3)), {
  message: 'not a valid regular expression after "re:"',
});

export const configSchema = z
  .object({
    bit_width: literalUnion([2, 4, 8] as const),
    group_size: literalUnion([16, 32, 64, 128, 256] as const),
    deployment_profile: z.enum(['edge', 'local', 'cloud']),
    enable_mixed_precision: z.boolean(),
    layer_bit_widths: z.record(layerKey, literalUnion(LAYER_BITS)),
    target_model_size_mb: z.number().positive().finite().nullable(),
    allocation_strategy: z.enum(['heuristic', 'measured']),
    skip_sensitive_layers: z.boolean(),
    sensitive_layer_names: z.array(z.string()),
    sensitive_layer_patterns: z.array(z.string().refine(isRegex, { message: 'not a valid regular expression' })),
    min_layer_cosine: z
      .object({ 2: z.number().min(0).max(1), 4: z.number().min(0).max(1), 8: z.number().min(0).max(1) })
      .partial()
      .strict(),
    min_accuracy: z.number().min(0).max(1),
    fail_fast: z.boolean(),
    refine: z.enum(['none', 'search']),
    double_quant: z.boolean(),
    enable_spatial: z.boolean(),
    smooth_alpha: z.number().min(0).max(1),
    enable_time_aware: z.boolean(),
    num_time_groups: z.number().int().min(1).max(100),
    act_bit_width: literalUnion([4, 8] as const),
    calibration_path: z.string().min(1).nullable(),
    modality: z.enum(['text', 'code', 'image', 'audio']).nullable(),
    num_threads: z.number().int().min(0),
  })
  .strict();

export type ArrowQuantConfig = z.infer<typeof configSchema> & {
  min_layer_cosine: { 2: number; 4: number; 8: number };
};
export type ConfigKey = keyof ArrowQuantConfig;
export type PartialConfig = Partial<z.infer<typeof configSchema>>;

export const DEFAULT_MIN_LAYER_COSINE = { 2: 0.7, 4: 0.9, 8: 0.95 };

export const DEFAULTS: ArrowQuantConfig = {
  bit_width: 4,
  group_size: 128,
  deployment_profile: 'local',
  enable_mixed_precision: false,
  layer_bit_widths: {},
  target_model_size_mb: null,
  allocation_strategy: 'heuristic',
  skip_sensitive_layers: false,
  sensitive_layer_names: [],
  sensitive_layer_patterns: [],
  min_layer_cosine: { ...DEFAULT_MIN_LAYER_COSINE },
  min_accuracy: 0.85,
  fail_fast: false,
  refine: 'none',
  double_quant: false,
  enable_spatial: false,
  smooth_alpha: 0.5,
  enable_time_aware: false,
  num_time_groups: 10,
  act_bit_width: 8,
  calibration_path: null,
  modality: null,
  num_threads: 0,
};

/** Allowed values and meaning of each key: error messages, `--help` and config.example.yaml. */
export const KEY_INFO: Record<ConfigKey, { allowed: string; meaning: string }> = {
  bit_width: { allowed: '2, 4, 8', meaning: 'default bit width of quantized layers' },
  group_size: { allowed: '16, 32, 64, 128, 256 (16 and 32 only with double_quant, which needs one of them)', meaning: 'elements per quantization group along a row' },
  deployment_profile: {
    allowed: 'edge, local, cloud',
    meaning: 'preset for bit_width / group_size / num_time_groups / min_accuracy (edge 2/256/5/0.65, local 4/128/10/0.85, cloud 8/64/20/0.95)',
  },
  enable_mixed_precision: { allowed: 'true, false', meaning: 'per-layer bit widths on' },
  layer_bit_widths: {
    allowed: 'a map from an exact layer name, "re:<regex>" or a "*" glob to 2, 4, 8 or 16',
    meaning: 'per-layer widths; exact names win over patterns, then the first matching pattern',
  },
  target_model_size_mb: { allowed: 'a positive number or null', meaning: 'size budget for bytes_out, in 10^6 bytes' },
  allocation_strategy: { allowed: 'heuristic, measured', meaning: 'how bits are assigned when mixed precision is on' },
  skip_sensitive_layers: { allowed: 'true, false', meaning: 'keep sensitive layers as 16-bit floats' },
  sensitive_layer_names: { allowed: 'a list of layer names', meaning: 'extra exact names counted as sensitive' },
  sensitive_layer_patterns: { allowed: 'a list of regular expressions', meaning: 'extra patterns counted as sensitive' },
  min_layer_cosine: {
    allowed: 'a map from 2, 4, 8 to a number in 0..1',
    meaning: "per-layer bar on cos(w, ŵ); a layer below its width's bar is redone at the next width (2→4→8)",
  },
  min_accuracy: { allowed: 'a number in 0..1', meaning: 'job-level bar on the parameter-weighted mean cosine of the quantized layers' },
  fail_fast: { allowed: 'true, false', meaning: 'a layer below its bar fails the job (exit 3) instead of falling back' },
  refine: { allowed: 'none, search', meaning: "search: choose each group's scale/zero point by a clipping search" },
  double_quant: {
    allowed: 'true, false',
    meaning: 'format v2: integer group scales/offsets under float16 factors per super-group, with a least-squares search (group_size 16 or 32)',
  },
  enable_spatial: { allowed: 'true, false', meaning: 'SmoothQuant-style channel equalization (needs calibration channel maxima)' },
  smooth_alpha: { allowed: 'a number in 0..1', meaning: 'equalization strength' },
  enable_time_aware: { allowed: 'true, false', meaning: 'per-timestep-group activation parameters (needs calibration timestep ranges)' },
  num_time_groups: { allowed: 'an integer in 1..100', meaning: 'timestep groups' },
  act_bit_width: { allowed: '4, 8', meaning: 'bit width of the activation parameters' },
  calibration_path: { allowed: 'a path or null', meaning: 'calibration statistics (JSON Lines or Arrow IPC)' },
  modality: { allowed: 'text, code, image, audio or null', meaning: 'detected from tensor names when null' },
  num_threads: { allowed: 'an integer ≥ 0', meaning: '0 = all cores' },
};

export const CONFIG_KEYS = Object.keys(DEFAULTS) as ConfigKey[];
