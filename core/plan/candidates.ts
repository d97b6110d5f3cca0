// What the measured allocation may choose from for each layer: width × group size × encoding
// (refine is the job's), or the 16-bit float. Manual widths, 1-D layers and sensitive layers under
// skip_sensitive_layers are fixed; other sensitive layers may go down to 8 bits.

import type { ArrowQuantConfig, LayerBits } from '../config/schema.js';
import { GROUP_SIZES, QUANT_BITS } from '../quant/reference.js';
import type { LayerPlan } from './plan.js';

/** Parameter encodings of the format: v1 (float16 scale and zero point per group) and v2 (double-quantized, format.md "Version 2"). */
export const ENCODINGS = ['v1', 'v2'] as const;
export type Encoding = (typeof ENCODINGS)[number];

export interface Candidate {
  bits: LayerBits;
  /** 0 for a 16-bit layer */
  groupSize: number;
  encoding: Encoding | null;
}

export interface LayerCandidates {
  /** why the layer has a single, fixed candidate; null when it is chosen by the optimiser */
  fixed: string | null;
  candidates: Candidate[];
}

export const FLOAT16: Candidate = { bits: 16, groupSize: 0, encoding: null };

/** Group sizes of the v2 encoding. */
export const V2_GROUP_SIZES = [16, 32] as const;

/** The encoding a job's own (heuristic or manual) layers get: v2 with double_quant. */
export const jobEncoding = (cfg: Pick<ArrowQuantConfig, 'double_quant'>): Encoding => (cfg.double_quant ? 'v2' : 'v1');

/** Encodings the optimiser may choose from: v1 always; v2 too when the job allows it (double_quant). */
export const allowedEncodings = (cfg: Pick<ArrowQuantConfig, 'double_quant'>): readonly Encoding[] => (cfg.double_quant ? ENCODINGS : ['v1']);

/** v2 group sizes with distinct results for a row of `cols` (as distinctGroupSizes for v1). */
function distinctV2GroupSizes(cols: number): number[] {
  return cols <= 16 ? [16] : [...V2_GROUP_SIZES];
}

/**
 * Group sizes that give distinct results for a row of `cols`: every size ≥ cols is one group per
 * row, so only the smallest of those is kept.
 */
export function distinctGroupSizes(cols: number): number[] {
  const below = GROUP_SIZES.filter((g) => g < cols);
  const atLeast = GROUP_SIZES.find((g) => g >= cols);
  return atLeast === undefined ? [...below] : [...below, atLeast];
}

export function layerCandidates(layer: LayerPlan, cfg: ArrowQuantConfig): LayerCandidates {
  if (layer.manual) {
    return { fixed: 'manual: layer_bit_widths', candidates: [{ bits: layer.bits, groupSize: layer.groupSize, encoding: layer.bits < 16 ? jobEncoding(cfg) : null }] };
  }
  if (layer.shape.length < 2) return { fixed: '1-D layer: kept at 16 bits', candidates: [FLOAT16] };
  if (layer.sensitive && cfg.skip_sensitive_layers) return { fixed: 'sensitive: kept at 16 bits (skip_sensitive_layers)', candidates: [FLOAT16] };
  const widths = layer.sensitive ? QUANT_BITS.filter((b) => b >= 8) : QUANT_BITS;
  const candidates: Candidate[] = [];
  for (const bits of widths) {
    for (const encoding of allowedEncodings(cfg)) {
      const sizes = encoding === 'v2' ? distinctV2GroupSizes(layer.cols) : distinctGroupSizes(layer.cols);
      for (const groupSize of sizes) candidates.push({ bits, groupSize, encoding });
    }
  }
  candidates.push(FLOAT16);
  return { fixed: null, candidates };
}

export const candidateLabel = (c: Candidate): string => (c.bits >= 16 ? `${c.bits}-bit float` : `${c.bits}-bit g${c.groupSize} ${c.encoding}`);
