// allocation_strategy: measured — each layer's encoding chosen from its measured error, the
// optimum rather than a greedy pass. Every layer the optimiser may choose for is measured at each
// candidate (width × group size × encoding, refine as configured; core/plan/candidates.ts);
// a candidate's cost is its relative squared error ‖W−Ŵ‖²/‖W‖² times its parameter count, its
// size its exact bytes_out. Candidates below their width's min_layer_cosine are excluded.
//   With a size target: the multiple-choice knapsack (core/plan/knapsack.ts) minimising Σ cost
//   subject to Σ bytes_out ≤ target — exact.
//   Without one: each layer gets its fewest-bytes candidate meeting the bars (ties: less error).
// The parameter-weighted mean cosine is then checked against min_accuracy. The same job always
// gets the same plan (measurement is exact; ties go to the earlier candidate).

import { InfeasibleTargetError, QualityBarError } from '../core/errors.js';
import type { ArrowQuantConfig } from '../core/config/schema.js';
import { buildLayerTasks, type LayerTask } from '../core/job/layer-task.js';
import { layerBytesOut, type MethodExtras } from '../core/plan/layer-bytes.js';
import { buildPlan, type LayerPlan, type Plan } from '../core/plan/plan.js';
import { candidateLabel, jobEncoding, layerCandidates, type Candidate } from '../core/plan/candidates.js';
import { MultipleChoiceKnapsack, type Choice, type KnapsackSolution } from '../core/plan/knapsack.js';
import type { AllocationPoint, AllocationSummary, ComparedPoint } from '../core/plan/allocation-summary.js';
import type { QuantBits } from '../core/quant/reference.js';
import { statsToQuality } from '../core/quant/layer-stats.js';
import { summarize } from './file-metadata.js';
import type { PreparedJob } from './job.js';
import { LayerMeasurements, type LayerMeasurer } from './layer-measurements.js';
import { MeasurementCache, defaultCacheDir } from './measurement-cache.js';

export interface MeasuredAllocationOptions {
  /** measurement cache directory; null: no cache; default: defaultCacheDir() */
  cacheDir?: string | null;
  /** budgets on the size–error curve (default 16) */
  curvePoints?: number;
  /** bound on the exact solver's table (items × byte units); beyond it the Lagrangian bound is used */
  maxCells?: number;
}

/** The group size uniform INT4 is compared at. */
const UNIFORM_GROUP = 128;

interface Scored {
  candidate: Candidate;
  bytes: number;
  cost: number;
  sqnrDb: number;
  cosine: number;
}

export function usesMeasuredAllocation(job: PreparedJob): boolean {
  return job.cfg.enable_mixed_precision && job.cfg.allocation_strategy === 'measured';
}

/** Every layer with its quantization method, at 4 bits / g128 (bits and group size are set per measurement). */
function quantizedTemplates(job: PreparedJob): { templates: LayerTask[]; plan: Plan } {
  const cfg: ArrowQuantConfig = {
    ...job.cfg, enable_mixed_precision: false, bit_width: 4, group_size: UNIFORM_GROUP, target_model_size_mb: null, layer_bit_widths: {},
    double_quant: false, // templates and uniform INT4 are v1; a v2 candidate is measured with double_quant set per task
  };
  const uniform = buildPlan(job.model, cfg, job.calibration);
  const all = buildPlan(job.model, { ...cfg, skip_sensitive_layers: false }, job.calibration);
  return { templates: buildLayerTasks(job.id, job.model, all, cfg, job.calibration), plan: uniform };
}

const extrasOf = (t: LayerTask, cols: number): MethodExtras => ({ equalizationScales: t.method === 'spatial' ? cols : 0, timeGroups: t.time_group_params?.length ?? 0 });

export async function applyMeasuredAllocation(job: PreparedJob, runner: LayerMeasurer, concurrency: number, opts: MeasuredAllocationOptions = {}): Promise<PreparedJob> {
  if (!usesMeasuredAllocation(job)) return job;
  const { templates, plan: uniform } = quantizedTemplates(job);
  const layers = job.plan.layers;
  const options = layers.map((l) => layerCandidates(l, job.cfg));

  const cache = new MeasurementCache(opts.cacheDir === undefined ? defaultCacheDir() : opts.cacheDir);
  const store = new LayerMeasurements(templates, cache);
  const own = jobEncoding(job.cfg);
  layers.forEach((l, i) => {
    for (const c of options[i]!.candidates) store.want(l.index, c.bits, c.groupSize, c.encoding ?? 'v1');
    store.want(l.index, l.bits, l.groupSize, own);
    store.want(l.index, uniform.layers[i]!.bits, uniform.layers[i]!.groupSize, 'v1');
  });
  await store.run(runner, concurrency);

  const score = (i: number, c: Candidate): Scored => {
    const l = layers[i]!;
    if (c.bits >= 16) return { candidate: c, bytes: layerBytesOut(l, 16, 0), cost: 0, sqnrDb: Infinity, cosine: 1 };
    const s = store.get(l.index, c.bits as QuantBits, c.groupSize, c.encoding ?? 'v1');
    const q = statsToQuality(s);
    const cost = s.w2 > 0 ? (l.rows * l.cols * s.e2) / s.w2 : 0;
    const bytes = layerBytesOut(l, c.bits, c.groupSize, extrasOf(templates[l.index]!, l.cols), c.encoding === 'v2');
    return { candidate: c, bytes, cost, sqnrDb: q.sqnrDb, cosine: q.cosine };
  };
  const bars = job.cfg.min_layer_cosine;
  const scored = options.map((o, i) => {
    const all = o.candidates.map((c) => score(i, c));
    // Fixed layers keep their one candidate whatever its cosine (the run's fallback applies).
    return o.fixed ? all : all.filter((s) => s.candidate.bits >= 16 || s.cosine >= bars[s.candidate.bits as QuantBits]);
  });
  const free = layers.map((_, i) => i).filter((i) => options[i]!.fixed === null);
  const fixed = layers.map((_, i) => i).filter((i) => options[i]!.fixed !== null);
  const fixedBytes = fixed.reduce((s, i) => s + scored[i]![0]!.bytes, 0);
  const items: Choice[][] = free.map((i) => scored[i]!.map((s) => ({ bytes: s.bytes, cost: s.cost })));

  const point = (picked: Scored[]): AllocationPoint => {
    const summary = summarize(
      picked.map((s, i) => ({ elements: layers[i]!.rows * layers[i]!.cols, bits: s.candidate.bits, plannedBits: s.candidate.bits, bytesIn: 0, bytesOut: s.bytes, sqnrDb: s.sqnrDb, cosine: s.cosine })),
    );
    return { bytes_out: summary.bytes_out, total_error: picked.reduce((t, s) => t + s.cost, 0), weighted_sqnr_db: summary.weighted_sqnr_db, weighted_cosine: summary.weighted_cosine };
  };
  const pickedFrom = (sol: KnapsackSolution): Scored[] => {
    const picked = layers.map((_, i) => scored[i]![0]!);
    free.forEach((i, k) => (picked[i] = scored[i]![sol.picks[k]!]!));
    return picked;
  };
  const heuristicPicked = layers.map((l, i) => score(i, { bits: l.bits, groupSize: l.groupSize, encoding: l.bits < 16 ? own : null }));
  const uniformPicked = uniform.layers.map((l, i) => score(i, { bits: l.bits, groupSize: l.groupSize, encoding: l.bits < 16 ? 'v1' : null }));
  const heuristicPoint = point(heuristicPicked);
  const uniformPoint = point(uniformPicked);

  const target = job.plan.targetBytes;
  const largest = fixedBytes + items.reduce((s, c) => s + Math.max(...c.map((x) => x.bytes)), 0);
  const reach = Math.min(largest, Math.max(target ?? 0, heuristicPoint.bytes_out, uniformPoint.bytes_out));
  const knapsack = new MultipleChoiceKnapsack(items, reach - fixedBytes, opts.maxCells);
  const smallest = fixedBytes + knapsack.smallestBytes;
  const optimumAt = (bytes: number) => {
    const sol = knapsack.solve(bytes - fixedBytes);
    return sol ? { sol, picked: pickedFrom(sol) } : null;
  };
  const compared = (p: AllocationPoint): ComparedPoint => {
    const o = optimumAt(p.bytes_out);
    return { ...p, optimum_at_same_bytes: o ? point(o.picked) : null };
  };

  let chosen: Scored[];
  let solver: AllocationSummary['solver'];
  let gap = 0;
  if (target === null) {
    solver = 'bars';
    chosen = layers.map((_, i) => scored[i]!.reduce((a, b) => (b.bytes < a.bytes || (b.bytes === a.bytes && b.cost < a.cost) ? b : a)));
  } else {
    const o = optimumAt(target);
    if (!o) {
      throw new InfeasibleTargetError(
        `target_model_size_mb ${job.cfg.target_model_size_mb} (${target} bytes) cannot be met: the smallest reachable size is ${smallest} bytes (${smallest / 1e6} MB), with every layer at its smallest candidate that meets min_layer_cosine${fixed.length ? ` and ${fixed.length} fixed layers (manual, 1-D or skip_sensitive_layers)` : ''}`,
        target,
        smallest,
      );
    }
    ({ picked: chosen } = o);
    solver = o.sol.solver;
    gap = o.sol.gap;
  }
  const chosenPoint = point(chosen);
  if (chosenPoint.weighted_cosine !== null && chosenPoint.weighted_cosine < job.cfg.min_accuracy) {
    throw new QualityBarError(
      `the measured allocation${target === null ? '' : ` for ${target} bytes`} has a parameter-weighted mean cosine of ${chosenPoint.weighted_cosine.toFixed(4)}, below min_accuracy ${job.cfg.min_accuracy}; raise target_model_size_mb or lower min_accuracy`,
    );
  }

  const curve = curveBudgets(smallest, reach, opts.curvePoints ?? 16).flatMap((budget) => {
    const o = optimumAt(budget);
    return o ? [{ budget, ...point(o.picked) }] : [];
  });
  const allocation: AllocationSummary = {
    strategy: 'measured', solver, optimality_gap: gap, target_bytes: target, candidates: scored.reduce((s, c) => s + c.length, 0),
    chosen: chosenPoint, heuristic: compared(heuristicPoint), uniform_int4: { ...compared(uniformPoint), group_size: UNIFORM_GROUP }, curve,
  };

  const planned = layers.map((l, i) => planLayer(l, templates[l.index]!, chosen[i]!, options[i]!.fixed, scored[i]!.length));
  const totalBytesOut = planned.reduce((s, l) => s + l.bytesOut, 0);
  const plan: Plan = {
    ...job.plan, layers: planned, totalBytesOut, targetMet: target === null || totalBytesOut <= target, allocation,
    measurements: { ...store.counts, cacheDir: cache.dir },
    warnings: [...job.plan.warnings, ...cache.writeFailures.slice(0, 3).map((w) => `measurement cache not written: ${w}`)],
  };
  return { ...job, plan, tasks: buildLayerTasks(job.id, job.model, plan, job.cfg, job.calibration) };
}

function planLayer(l: LayerPlan, template: LayerTask, s: Scored, fixed: string | null, candidates: number): LayerPlan {
  if (fixed) return l;
  const quantized = s.candidate.bits < 16;
  const err = l.rows * l.cols ? s.cost / (l.rows * l.cols) : 0;
  return {
    ...l,
    bits: s.candidate.bits,
    groupSize: s.candidate.groupSize,
    doubleQuant: s.candidate.encoding === 'v2',
    method: quantized ? template.method : 'none',
    timeGroups: quantized ? template.time_group_params?.length ?? 0 : 0,
    notes: quantized ? template.notes : [],
    bytesOut: s.bytes,
    reason: `measured: ${candidateLabel(s.candidate)}, relative error ${err === 0 ? '0' : err.toExponential(2)} (optimum over ${candidates} candidates${l.sensitive ? '; sensitive: ≥ 8 bits' : ''})`,
  };
}

/** `n` budgets from the smallest reachable size to `reach`, in whole bytes. */
function curveBudgets(smallest: number, reach: number, n: number): number[] {
  if (reach <= smallest || n < 2) return [Math.max(smallest, reach)];
  return Array.from({ length: n }, (_, k) => Math.round(smallest + ((reach - smallest) * k) / (n - 1)));
}
