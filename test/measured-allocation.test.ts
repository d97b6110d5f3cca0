import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { resolveConfig } from '../core/config/load.js';
import type { PartialConfig } from '../core/config/schema.js';
import { InfeasibleTargetError, QualityBarError } from '../core/errors.js';
import type { LayerTask } from '../core/job/layer-task.js';
import { distinctGroupSizes } from '../core/plan/candidates.js';
import type { QuantBits } from '../core/quant/reference.js';
import { prepareJobForPlan } from '../coordinator/job.js';
import { applyMeasuredAllocation } from '../coordinator/measured-allocation.js';
import { defaultCacheDir } from '../coordinator/measurement-cache.js';
import { LayerRunner } from '../worker/layer-runner.js';
import { ThreadPool } from '../worker/thread-pool.js';
import { FIXTURE_MODELS } from './helpers/cli.js';
import { tempDir } from './helpers/models.js';

const BF16 = join(FIXTURE_MODELS, 'stories260K-bf16.safetensors');
const { dir, cleanup } = tempDir('aq-measured-');
let pool: ThreadPool;
beforeAll(async () => {
  pool = await ThreadPool.start(2);
});
afterAll(async () => {
  await pool.close();
  cleanup();
});

/** A real LayerRunner that counts the (layer, width, group) measurements it is asked for. */
function countingRunner() {
  const runner = new LayerRunner(pool);
  const counter = {
    triples: 0,
    measure(task: LayerTask, widths: readonly QuantBits[]) {
      counter.triples += widths.length;
      return runner.measure(task, widths);
    },
  };
  return counter;
}

const allocate = async (cfg: PartialConfig, cacheDir: string | null, runner = countingRunner()) => {
  const job = prepareJobForPlan(BF16, resolveConfig({ enable_mixed_precision: true, allocation_strategy: 'measured', ...cfg }));
  return { job: await applyMeasuredAllocation(job, runner, 3, { cacheDir }), heuristic: job.plan, runner };
};

describe('measured allocation', () => {
  test('measured allocation - never exceeds the target, and is never worse than the heuristic at its bytes', async () => {
    const cacheDir = join(dir, 'targets');
    let previous = Infinity;
    for (const mb of [0.17, 0.2, 0.22, 0.26, 0.35]) {
      const { job, heuristic } = await allocate({ target_model_size_mb: mb }, cacheDir);
      const plan = job.plan;
      const a = plan.allocation!;
      expect(plan.totalBytesOut).toBeLessThanOrEqual(mb * 1e6);
      expect(plan.totalBytesOut).toBe(plan.layers.reduce((s, l) => s + l.bytesOut, 0));
      expect(a.chosen.bytes_out).toBe(plan.totalBytesOut);
      expect([a.solver, a.optimality_gap]).toEqual(['dp', 0]);
      // more budget never costs accuracy: the optimum's error falls as the target grows
      expect(a.chosen.total_error).toBeLessThanOrEqual(previous);
      previous = a.chosen.total_error;
      if (heuristic.targetMet) expect(a.heuristic.optimum_at_same_bytes!.total_error).toBeLessThanOrEqual(a.heuristic.total_error);
      // tasks follow the plan: per-layer width and group size
      job.tasks.forEach((t, i) => expect([t.bits, t.group_size]).toEqual([plan.layers[i]!.bits, plan.layers[i]!.groupSize]));
      // the curve is the optimum at increasing budgets: bytes within budget, error non-increasing
      for (let k = 0; k < a.curve.length; k++) {
        expect(a.curve[k]!.bytes_out).toBeLessThanOrEqual(a.curve[k]!.budget);
        if (k) expect(a.curve[k]!.total_error).toBeLessThanOrEqual(a.curve[k - 1]!.total_error);
      }
    }
  });

  test('measured allocation - manual and forced layers are untouched; sensitive layers never go below 8 bits', async () => {
    const manual = 'model.layers.2.mlp.up_proj.weight';
    const { job } = await allocate({ target_model_size_mb: 0.2, layer_bit_widths: { [manual]: 2 }, group_size: 64 }, null);
    const byName = new Map(job.plan.layers.map((l) => [l.name, l]));
    expect([byName.get(manual)!.bits, byName.get(manual)!.groupSize, byName.get(manual)!.reason]).toEqual([2, 64, 'manual: layer_bit_widths exact name']);
    for (const l of job.plan.layers.filter((x) => x.shape.length === 1)) expect([l.bits, l.method]).toEqual([16, 'none']);
    for (const l of job.plan.layers.filter((x) => x.sensitive)) expect(l.bits).toBeGreaterThanOrEqual(8);

    const forced = await allocate({ target_model_size_mb: 0.22, skip_sensitive_layers: true }, null);
    for (const l of forced.job.plan.layers.filter((x) => x.sensitive)) expect([l.bits, l.reason]).toEqual([16, expect.stringMatching(/^sensitive: name contains/)]);
    // the exact optimum over RTN candidates with sensitive layers at 16 (issue 13's table: 219,984 bytes, 35,052)
    expect(forced.job.plan.totalBytesOut).toBe(219984);
    expect(Math.round(forced.job.plan.allocation!.chosen.total_error)).toBe(35052);
  });

  test('measured allocation - a second plan of the same model measures nothing and gives the same plan; corrupt entries are re-measured', async () => {
    const cacheDir = join(dir, 'cache');
    const first = await allocate({ target_model_size_mb: 0.22 }, cacheDir);
    expect(first.runner.triples).toBeGreaterThan(200);
    // layers with identical bytes (the norms) may answer each other from the cache within a run
    const m = first.job.plan.measurements!;
    expect([m.measured, m.cacheDir]).toEqual([first.runner.triples, cacheDir]);
    const second = await allocate({ target_model_size_mb: 0.22 }, cacheDir);
    expect(second.runner.triples).toBe(0);
    expect(second.job.plan.measurements!.cached).toBe(m.measured + m.cached);
    expect(second.job.plan.layers).toEqual(first.job.plan.layers);
    expect(second.job.plan.allocation).toEqual(first.job.plan.allocation);

    // one entry made to lie (a tiny error) and one truncated: neither is trusted
    const root = join(cacheDir, 'measurements-v1');
    const files = readdirSync(root, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name)).sort();
    expect(files.length).toBeLessThanOrEqual(first.runner.triples);
    const lying = JSON.parse(readFileSync(files[0]!, 'utf8'));
    lying.key.bits = lying.key.bits === 2 ? 4 : 2;
    writeFileSync(files[0]!, JSON.stringify(lying));
    writeFileSync(files[1]!, '{"key": {"source_sha256": "ab');
    // and one grown far beyond any entry's size: not read, re-measured
    writeFileSync(files[2]!, ' '.repeat(1 << 20));
    const third = await allocate({ target_model_size_mb: 0.22 }, cacheDir);
    expect(third.runner.triples).toBe(3);
    expect(third.job.plan.layers).toEqual(first.job.plan.layers);
    // a cache that cannot be written is a warning, not a failure
    const blocked = join(dir, 'not-a-dir');
    writeFileSync(blocked, 'x');
    const unwritable = await allocate({ target_model_size_mb: 0.22 }, blocked);
    expect(unwritable.job.plan.layers).toEqual(first.job.plan.layers);
    expect(unwritable.job.plan.warnings.join('\n')).toMatch(/measurement cache not written: .*not-a-dir\/measurements-v1\/.*: (ENOTDIR|EEXIST)/);
  });

  test('measured allocation - beyond the exact solver\'s bound, the Lagrangian fallback fits the target and reports its gap', async () => {
    const cacheDir = join(dir, 'lagrangian');
    const exact = await allocate({ target_model_size_mb: 0.22 }, cacheDir);
    const job = prepareJobForPlan(BF16, resolveConfig({ enable_mixed_precision: true, allocation_strategy: 'measured', target_model_size_mb: 0.22 }));
    const fallback = (await applyMeasuredAllocation(job, countingRunner(), 3, { cacheDir, maxCells: 1000 })).plan.allocation!;
    const best = exact.job.plan.allocation!.chosen.total_error;
    expect(fallback.solver).toBe('lagrangian');
    expect(fallback.chosen.bytes_out).toBeLessThanOrEqual(220000);
    expect(fallback.chosen.total_error).toBeGreaterThanOrEqual(best - 1e-6);
    // the reported gap bounds the distance to the true optimum
    expect(fallback.chosen.total_error - fallback.optimality_gap).toBeLessThanOrEqual(best + 1e-6);
    expect(fallback.optimality_gap).toBeGreaterThanOrEqual(0);
  });

  test('measured allocation - an unreachable target is an InfeasibleTargetError naming the smallest reachable size', async () => {
    const err = await allocate({ target_model_size_mb: 0.1 }, null).catch((e) => e);
    expect(err).toBeInstanceOf(InfeasibleTargetError);
    expect(err.message).toMatch(/^target_model_size_mb 0.1 \(100000 bytes\) cannot be met: the smallest reachable size is \d+ bytes \(0\.\d+ MB\), with every layer at its smallest candidate that meets min_layer_cosine and 11 fixed layers/);
    // the measured strategy reaches below the heuristic's floor (202,400 bytes) with embeddings at 8 bits
    expect(err.smallestReachableBytes).toBeLessThan(202400);
    const ok = await allocate({ target_model_size_mb: err.smallestReachableBytes / 1e6 }, null);
    expect(ok.job.plan.totalBytesOut).toBe(err.smallestReachableBytes);
  });

  test('measured allocation - min_layer_cosine excludes candidates; a min_accuracy the optimum misses is a QualityBarError', async () => {
    const bars = { 2: 1, 4: 0.995, 8: 0 };
    const { job } = await allocate({ target_model_size_mb: 0.3, min_layer_cosine: bars }, join(dir, 'bars'));
    // no layer can meet a cosine of 1 at 2 bits, so none is planned there
    expect(job.plan.layers.some((l) => l.bits === 2)).toBe(false);
    expect(job.plan.totalBytesOut).toBeLessThanOrEqual(300000);
    const err = await allocate({ target_model_size_mb: 0.17, min_accuracy: 0.99 }, join(dir, 'bars')).catch((e) => e);
    expect(err).toBeInstanceOf(QualityBarError);
    expect(err.message).toMatch(/^the measured allocation for 170000 bytes has a parameter-weighted mean cosine of 0\.\d{4}, below min_accuracy 0\.99; raise target_model_size_mb or lower min_accuracy$/);
  });

  test('measured allocation - group sizes at or beyond a row keep only the smallest; the default cache is under XDG_CACHE_HOME', () => {
    expect(distinctGroupSizes(64)).toEqual([32, 64]);
    expect(distinctGroupSizes(172)).toEqual([32, 64, 128, 256]);
    expect(distinctGroupSizes(16)).toEqual([32]);
    expect(defaultCacheDir({ XDG_CACHE_HOME: '/x/cache' })).toBe('/x/cache/arrowquant');
    expect(defaultCacheDir({ XDG_CACHE_HOME: 'relative', HOME: '/home/u' })).toMatch(/\/\.cache\/arrowquant$/);
  });
});
