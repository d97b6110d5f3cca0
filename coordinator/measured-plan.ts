// `plan` with allocation_strategy: measured — the same plan quantize will use, which means
// measuring the layers on local threads (or reading the measurements from the cache).

import type { ArrowQuantConfig } from '../core/config/schema.js';
import type { Plan } from '../core/plan/plan.js';
import { withLocalMeasurer } from './run/local-measure.js';
import { prepareJobForPlan } from './job.js';
import { applyMeasuredAllocation, type MeasuredAllocationOptions } from './measured-allocation.js';

export async function measuredPlan(modelPath: string, cfg: ArrowQuantConfig, opts: MeasuredAllocationOptions = {}): Promise<Plan> {
  const job = prepareJobForPlan(modelPath, cfg);
  const measured = await withLocalMeasurer(cfg.num_threads, (measurer, concurrency) => applyMeasuredAllocation(job, measurer, concurrency, opts));
  const m = measured.plan.measurements;
  const how = m && m.measured === 0 ? 'every measurement came from the cache' : 'weights were read to measure each layer';
  return { ...measured.plan, warnings: [...measured.plan.warnings, `allocation_strategy measured: ${how}`] };
}
