// One unit of work: a layer to quantize, everything a worker needs and nothing more. The same
// task runs in a local worker thread and on a cluster worker (where it arrives as JSON over NATS
// and is validated with this schema).

import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { ArrowQuantConfig } from '../config/schema.js';
import type { Calibration } from '../quant/calibration.js';
import { timeGroupParams } from '../quant/calibration.js';
import type { ModelSource } from '../model/model-source.js';
import type { Plan } from '../plan/plan.js';
import { basename } from 'node:path';
import { jobIdSchema } from '../cluster/job-id.js';

const nonNegInt = z.number().int().min(0);
const cosineBar = z.number().min(0).max(1);
/** Bounds of a task from the network; the coordinator checks its own tasks against them before publishing. */
export const MAX_TENSOR_DIMS = 64;
export const MAX_TENSOR_NAME = 65_536;

export const layerTaskSchema = z
  .object({
    job_id: jobIdSchema,
    layer_index: nonNegInt,
    name: z.string().min(1).max(MAX_TENSOR_NAME),
    shape: z.array(nonNegInt).max(MAX_TENSOR_DIMS),
    dtype: z.enum(['F32', 'F16', 'BF16']),
    /** path of the safetensors file as the coordinator sees it */
    file: z.string().min(1).max(4096),
    file_name: z.string().min(1).max(4096),
    data_start: nonNegInt,
    byte_length: nonNegInt,
    bits: z.union([z.literal(2), z.literal(4), z.literal(8), z.literal(16)]),
    method: z.enum(['base', 'spatial', 'time_aware', 'none']),
    group_size: z.union([z.literal(0), z.literal(32), z.literal(64), z.literal(128), z.literal(256)]),
    refine: z.boolean(),
    min_layer_cosine: z.object({ 2: cosineBar, 4: cosineBar, 8: cosineBar }).strict(),
    fail_fast: z.boolean(),
    notes: z.array(z.string()),
    channel_absmax: z.array(z.number().finite().min(0)).nullable(),
    smooth_alpha: z.number().min(0).max(1),
    act_bit_width: z.union([z.literal(4), z.literal(8)]).nullable(),
    time_group_params: z
      .array(z.object({ t_start: nonNegInt, t_end: nonNegInt, scale: z.number().finite(), zero_point: z.number().finite() }).strict())
      .nullable(),
    /** hash of everything above that changes the result: part of the NATS message id */
    plan_hash: z.string().regex(/^[0-9a-f]{16,64}$/),
  })
  .strict();

export type LayerTask = z.infer<typeof layerTaskSchema>;

/** Tasks for every layer of a plan, in canonical order. */
export function buildLayerTasks(jobId: string, model: ModelSource, plan: Plan, cfg: ArrowQuantConfig, cal: Calibration | null): LayerTask[] {
  return plan.layers.map((l) => {
    const t = model.tensors[l.index]!;
    const stats = cal?.get(l.name);
    const task: Omit<LayerTask, 'plan_hash'> = {
      job_id: jobId,
      layer_index: l.index,
      name: l.name,
      shape: l.shape,
      dtype: l.dtype,
      file: t.file,
      file_name: basename(t.file),
      data_start: t.dataStart,
      byte_length: t.byteLength,
      bits: l.bits,
      method: l.method,
      group_size: l.groupSize as LayerTask['group_size'],
      refine: cfg.refine === 'search',
      min_layer_cosine: cfg.min_layer_cosine,
      fail_fast: cfg.fail_fast,
      notes: l.notes,
      channel_absmax: l.method === 'spatial' ? Array.from(stats!.channelAbsmax!) : null,
      smooth_alpha: cfg.smooth_alpha,
      act_bit_width: l.method === 'time_aware' ? cfg.act_bit_width : null,
      time_group_params: l.method === 'time_aware' ? timeGroupParams(stats!, cfg.num_time_groups, cfg.act_bit_width) : null,
    };
    const { file: _file, ...identity } = task;
    return { ...task, plan_hash: createHash('sha256').update(JSON.stringify(identity)).digest('hex').slice(0, 32) };
  });
}
