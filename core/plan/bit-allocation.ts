// Bit widths per layer: the seed's heuristic, manual widths, and the greedy target-size pass.
//
// With mixed precision off every layer gets bit_width (sensitive ones 16 with
// skip_sensitive_layers). With it on, in order: a manual layer_bit_widths entry; a sensitive
// name → 16; `attn`/`attention` → 4; else by depth — the block number in the name over the
// number of blocks (or the position in the layer list when the name has none): below 25% → 4,
// 25–75% → 2, from 75% → 4. A size target then lowers the largest non-manual layers, all 8→4
// first and then 4→2, largest first, until bytes_out fits.

import { InfeasibleTargetError } from '../errors.js';
import type { ArrowQuantConfig, LayerBits } from '../config/schema.js';
import { LayerPatternMap } from './layer-patterns.js';
import { SensitivityDetector } from './sensitivity.js';
import { layerBytesOut, type LayerGeometry, type MethodExtras, NO_EXTRAS } from './layer-bytes.js';

export interface AllocationInput extends LayerGeometry {
  name: string;
  /** bytes a quantization method adds to this layer when quantized (spatial, time-aware) */
  extras?: MethodExtras;
}

export interface Allocation {
  bits: LayerBits;
  reason: string;
  manual: boolean;
  sensitive: boolean;
}

export interface AllocationResult {
  allocations: Allocation[];
  bytesOut: number;
  targetBytes: number | null;
  targetMet: boolean;
}

/** The block number of a layer: the first all-digit component of its dotted name. */
export function blockNumber(name: string): number | null {
  for (const part of name.split('.')) if (/^\d+$/.test(part)) return Number(part);
  return null;
}

const ATTENTION = /attn|attention/;

export function allocateBitWidths(layers: AllocationInput[], cfg: ArrowQuantConfig): AllocationResult {
  const sensitivity = new SensitivityDetector(cfg);
  const manual = new LayerPatternMap(cfg.layer_bit_widths);
  const blocks = layers.map((l) => blockNumber(l.name));
  // a reduce, not Math.max(...spread): 130,000 arguments overflow the stack
  const numBlocks = blocks.reduce<number>((m, b) => Math.max(m, b === null ? 0 : b + 1), 0);

  const allocations: Allocation[] = layers.map((layer, i) => {
    const sens = sensitivity.reason(layer.name);
    if (!cfg.enable_mixed_precision) {
      if (cfg.skip_sensitive_layers && sens) return { bits: 16, reason: `${sens} (skip_sensitive_layers)`, manual: false, sensitive: true };
      return { bits: cfg.bit_width, reason: `bit_width ${cfg.bit_width} (mixed precision off)`, manual: false, sensitive: sens !== null };
    }
    const m = manual.lookup(layer.name);
    if (m) {
      const how = m.exact ? 'exact name' : `pattern "${m.key}"`;
      return { bits: m.value, reason: `manual: layer_bit_widths ${how}`, manual: true, sensitive: sens !== null };
    }
    if (sens) return { bits: 16, reason: sens, manual: false, sensitive: true };
    const lower = layer.name.toLowerCase();
    if (ATTENTION.test(lower)) return { bits: 4, reason: 'attention layer → 4', manual: false, sensitive: false };
    const block = blocks[i];
    const [position, where] =
      block !== null && numBlocks > 0
        ? [block / numBlocks, `block ${block} of ${numBlocks}`]
        : [i / layers.length, `position ${i} of ${layers.length}`];
    const pct = `${(position * 100).toFixed(0)}%`;
    if (position < 0.25) return { bits: 4, reason: `depth: ${where} (${pct}, early) → 4`, manual: false, sensitive: false };
    if (position < 0.75) return { bits: 2, reason: `depth: ${where} (${pct}, middle) → 2`, manual: false, sensitive: false };
    return { bits: 4, reason: `depth: ${where} (${pct}, late) → 4`, manual: false, sensitive: false };
  });

  const bytesOf = (i: number, bits: number) => layerBytesOut(layers[i]!, bits, cfg.group_size, layers[i]!.extras ?? NO_EXTRAS);
  let total = allocations.reduce((s, a, i) => s + bytesOf(i, a.bits), 0);
  const targetBytes = cfg.target_model_size_mb === null ? null : Math.round(cfg.target_model_size_mb * 1e6);
  if (targetBytes === null || total <= targetBytes) {
    return { allocations, bytesOut: total, targetBytes, targetMet: true };
  }

  const lowerable = allocations
    .map((_, i) => i)
    .filter((i) => cfg.enable_mixed_precision && !allocations[i]!.manual && allocations[i]!.bits < 16);
  const isLowerable = new Set(lowerable);
  const smallest = allocations.reduce((s, a, i) => s + bytesOf(i, isLowerable.has(i) ? 2 : a.bits), 0);
  // The measured strategy reaches further (sensitive layers at 8 bits) and judges the target
  // itself; the heuristic's plan, lowered as far as it goes, is then only its point of comparison.
  const measured = cfg.allocation_strategy === 'measured' && cfg.enable_mixed_precision;
  if (smallest > targetBytes && !measured) {
    const kept = allocations.filter((a) => a.bits === 16).length;
    const how = cfg.enable_mixed_precision
      ? `with every quantized layer at 2 bits${kept ? ` and ${kept} layers kept at 16 bits` : ''}`
      : `with mixed precision off every layer stays at its width; turn on enable_mixed_precision (--mixed-precision) to let layers go lower`;
    throw new InfeasibleTargetError(
      `target_model_size_mb ${cfg.target_model_size_mb} (${targetBytes} bytes) cannot be met: the smallest reachable size is ${smallest} bytes (${smallest / 1e6} MB), ${how}`,
      targetBytes,
      smallest,
    );
  }

  const bySize = [...lowerable].sort((a, b) => layers[b]!.rows * layers[b]!.cols - layers[a]!.rows * layers[a]!.cols || a - b);
  for (const from of [8, 4] as const) {
    for (const i of bySize) {
      if (total <= targetBytes) break;
      const a = allocations[i]!;
      if (a.bits !== from) continue;
      const to = (from / 2) as LayerBits;
      total += bytesOf(i, to) - bytesOf(i, from);
      a.bits = to;
      a.reason += `; lowered ${from}→${to} for the size target`;
    }
  }
  return { allocations, bytesOut: total, targetBytes, targetMet: total <= targetBytes };
}
