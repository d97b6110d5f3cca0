// allocation_strategy: measured — bits chosen from each layer's measured error instead of its
// name. Every layer the heuristic would quantize (not sensitive, not set by hand) is quantized at
// 2, 4 and 8 bits without keeping the result; its cost at a width is its relative squared error
// times its parameter count (so the sum is what the weighted SQNR reflects).
//   With a size target: start every such layer at 8 bits and repeatedly take the lowering
//   (8→4 or 4→2) that adds the least cost per byte saved, until bytes_out fits.
//   Without one: each layer gets the fewest bits whose cosine meets min_layer_cosine.
// Measurement is exact and ties go to the lower layer index: the same job always gets the same plan.

import { InfeasibleTargetError } from '../core/errors.js';
import { buildLayerTasks } from '../core/job/layer-task.js';
import { layerBytesOut, type MethodExtras } from '../core/plan/layer-bytes.js';
import type { LayerPlan, Plan } from '../core/plan/plan.js';
import type { QuantBits } from '../core/quant/reference.js';
import { statsToQuality, type LayerStats } from '../core/quant/layer-stats.js';
import type { LayerRunner } from '../worker/layer-runner.js';
import type { PreparedJob } from './job.js';

const WIDTHS: readonly QuantBits[] = [2, 4, 8];

interface Measured {
  layer: LayerPlan;
  cost: Record<QuantBits, number>;
  cosine: Record<QuantBits, number>;
  bytes: Record<QuantBits, number>;
}

export function usesMeasuredAllocation(job: PreparedJob): boolean {
  return job.cfg.enable_mixed_precision && job.cfg.allocation_strategy === 'measured';
}

export async function applyMeasuredAllocation(job: PreparedJob, runner: LayerRunner, concurrency: number): Promise<PreparedJob> {
  if (!usesMeasuredAllocation(job)) return job;
  const candidates = job.plan.layers.filter((l) => l.bits < 16 && !l.manual);
  const measured: Measured[] = new Array(candidates.length);
  let next = 0;
  const lane = async () => {
    while (next < candidates.length) {
      const i = next++;
      const layer = candidates[i]!;
      const stats = await runner.measure(job.tasks[layer.index]!, WIDTHS);
      measured[i] = describe(layer, stats, job.cfg.group_size, extrasOf(layer), job.cfg.double_quant);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, lane));

  const bits = new Map<number, QuantBits>();
  const target = job.plan.targetBytes;
  if (target === null) {
    for (const m of measured) {
      const ok = WIDTHS.find((b) => m.cosine[b] >= job.cfg.min_layer_cosine[b]);
      bits.set(m.layer.index, ok ?? 8);
    }
  } else {
    for (const m of measured) bits.set(m.layer.index, 8);
    const fixed = job.plan.layers.filter((l) => !bits.has(l.index)).reduce((s, l) => s + l.bytesOut, 0);
    let total = fixed + measured.reduce((s, m) => s + m.bytes[8], 0);
    const smallest = fixed + measured.reduce((s, m) => s + m.bytes[2], 0);
    if (smallest > target) {
      throw new InfeasibleTargetError(
        `target_model_size_mb ${job.cfg.target_model_size_mb} (${target} bytes) cannot be met: the smallest reachable size is ${smallest} bytes (${smallest / 1e6} MB), with every measured layer at 2 bits`,
        target,
        smallest,
      );
    }
    while (total > target) {
      let best: { m: Measured; from: QuantBits; to: QuantBits; ratio: number } | null = null;
      for (const m of measured) {
        const from = bits.get(m.layer.index)!;
        if (from === 2) continue;
        const to = (from / 2) as QuantBits;
        const saved = m.bytes[from] - m.bytes[to];
        if (saved <= 0) continue;
        const ratio = (m.cost[to] - m.cost[from]) / saved;
        if (!best || ratio < best.ratio) best = { m, from, to, ratio };
      }
      if (!best) break;
      bits.set(best.m.layer.index, best.to);
      total -= best.m.bytes[best.from] - best.m.bytes[best.to];
    }
  }

  const byIndex = new Map(measured.map((m) => [m.layer.index, m]));
  const layers = job.plan.layers.map((l) => {
    const m = byIndex.get(l.index);
    if (!m) return l;
    const b = bits.get(l.index)!;
    const errors = WIDTHS.map((w) => `${m.cost[w] / Math.max(1, l.rows * l.cols) < 1e-12 ? '0' : (m.cost[w] / (l.rows * l.cols)).toExponential(2)} at ${w}`).join(', ');
    return { ...l, bits: b, bytesOut: m.bytes[b], reason: `measured: relative error ${errors} → ${b}` };
  });
  const totalBytesOut = layers.reduce((s, l) => s + l.bytesOut, 0);
  const plan: Plan = { ...job.plan, layers, totalBytesOut, targetMet: target === null || totalBytesOut <= target };
  return { ...job, plan, tasks: buildLayerTasks(job.id, job.model, plan, job.cfg, job.calibration) };
}

function extrasOf(l: LayerPlan): MethodExtras {
  return { equalizationScales: l.method === 'spatial' ? l.cols : 0, timeGroups: l.timeGroups };
}

function describe(layer: LayerPlan, stats: Map<QuantBits, LayerStats>, groupSize: number, extras: MethodExtras, doubleQuant: boolean): Measured {
  const n = layer.rows * layer.cols;
  const m: Measured = { layer, cost: { 2: 0, 4: 0, 8: 0 }, cosine: { 2: 0, 4: 0, 8: 0 }, bytes: { 2: 0, 4: 0, 8: 0 } };
  for (const b of WIDTHS) {
    const s = stats.get(b)!;
    m.cost[b] = s.w2 > 0 ? (n * s.e2) / s.w2 : 0;
    m.cosine[b] = statsToQuality(s).cosine;
    m.bytes[b] = layerBytesOut(layer, b, groupSize, extras, doubleQuant);
  }
  return m;
}
