// Measure tasks (allocation_strategy: measured in cluster mode) and their results, validated with
// zod at both ends like the quantize task. A measure task asks a worker for a layer's four error
// sums at some widths for one (group size, encoding); the worker writes them to the job state
// under measureKey(), which the coordinator watches.

import { createHash } from 'node:crypto';
import { z } from 'zod';
import { layerTaskSchema, type LayerTask } from '../job/layer-task.js';
import type { QuantBits } from '../quant/reference.js';
import type { LayerStats } from '../quant/layer-stats.js';
import { MAX_EVENT_TEXT, runIdSchema } from './messages.js';

const width = z.union([z.literal(2), z.literal(4), z.literal(8)]);
const measureIdSchema = z.string().regex(/^[0-9a-f]{32}$/, 'a measure id is 32 lowercase hex digits');

export const measureMessageSchema = z
  .object({
    /** the layer with the method, group size and encoding to measure (its `bits` is not used) */
    task: layerTaskSchema,
    /** the widths to measure, ascending, each once */
    widths: z.array(width).min(1).max(3).refine((w) => w.every((b, i) => i === 0 || b > w[i - 1]!), 'widths must be ascending and distinct'),
    /** measureId(task, widths): the result names it, so no result is taken for another question */
    measure_id: measureIdSchema,
    /** the run that asked; a worker drops a measure task of a run that no longer holds the job */
    run_id: runIdSchema,
  })
  .strict();
export type MeasureMessage = z.infer<typeof measureMessageSchema>;

const sum = z.number().finite();
export const measureResultSchema = z
  .object({
    measure_id: measureIdSchema,
    worker: z.string().max(MAX_EVENT_TEXT),
    stats: z.array(z.object({ bits: width, w2: sum.min(0), e2: sum.min(0), wq: sum, q2: sum.min(0) }).strict()).min(1).max(3),
  })
  .strict();
export type MeasureResult = z.infer<typeof measureResultSchema>;

/** v2 when the task double-quantizes its group parameters (what LayerMeasurements calls the encoding). */
export const taskEncoding = (task: LayerTask): 'v1' | 'v2' => (task.double_quant ? 'v2' : 'v1');

/** Hash of everything that decides the sums (the task without its file path and plan hash, and the widths). */
export function measureId(task: LayerTask, widths: readonly QuantBits[]): string {
  const { file: _file, plan_hash: _plan, ...identity } = task;
  return createHash('sha256').update(JSON.stringify({ identity, widths })).digest('hex').slice(0, 32);
}

/** The sums per width of a result, or why it does not answer `widths`. */
export function resultStats(r: MeasureResult, widths: readonly QuantBits[]): Map<QuantBits, LayerStats> | string {
  const out = new Map<QuantBits, LayerStats>();
  for (const { bits, ...s } of r.stats) out.set(bits, s);
  const missing = widths.filter((b) => !out.has(b));
  if (missing.length || out.size !== widths.length) return `it holds widths ${[...out.keys()].join(', ')} for widths ${widths.join(', ')}`;
  return out;
}
