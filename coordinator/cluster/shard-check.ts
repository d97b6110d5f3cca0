// What an uploaded shard may be, from the layer's task (that is, the job's plan) alone. A worker's
// shard is untrusted input: its declared size is bounded before a byte is received, and the
// decoded row must be exactly what the plan produces for the layer — name, shape, dtype, planned
// and actual bits (only the task's quality fallbacks may raise them), group size, method, the
// length of every buffer and the data's SHA-256.

import { createHash } from 'node:crypto';
import { ArrowQuantError } from '../../core/errors.js';
import type { LayerTask } from '../../core/job/layer-task.js';
import { matrixView } from '../../core/model/model-source.js';
import { groupsPerRow, packedBytes, type QuantBits } from '../../core/quant/reference.js';
import { v2Layout, v2ParamBytes, v2SuperGroups, type V2GroupSize } from '../../core/quant/reference-v2.js';
import { quantizedBytesOut } from '../../core/plan/layer-bytes.js';
import { quantTypeForBits, type LayerRecord } from '../../core/format/layer-schema.js';

/** A shard that is not what the plan produces for its layer (exit 2: the input is wrong). */
export class ShardMismatchError extends ArrowQuantError {
  override readonly exitCode = 2;
  constructor(
    message: string,
    readonly layer: string,
    readonly field: string,
  ) {
    super(message);
  }
}

/** The widths a layer can end at: its planned one, then the quality fallbacks (2→4→8) unless fail_fast. */
export function allowedBits(task: LayerTask): number[] {
  if (task.bits === 16) return [16];
  const out = [task.bits as number];
  if (!task.fail_fast) for (let b = task.bits as number; b < 8; ) out.push((b *= 2));
  return out;
}

/** Room for the schema message, the batch's flatbuffer, buffer padding, strings and fallback notes. */
const FRAMING_BYTES = 64 << 10;

/** The largest shard the layer can have at any width it may end at. */
export function maxShardBytes(task: LayerTask): number {
  const { rows, cols } = matrixView(task.shape);
  const elements = rows * cols;
  const strings = Buffer.byteLength(task.name) + task.notes.reduce((s, n) => s + Buffer.byteLength(n) + 2, 0);
  const widest = Math.max(...allowedBits(task));
  if (widest === 16) return FRAMING_BYTES + strings + 2 * elements;
  // codes and group parameters at the widest width the layer may end at (v1 or v2 encoding)
  const codesAndParams = quantizedBytesOut({ rows, cols }, widest, task.group_size, undefined, task.double_quant === true);
  const extras = (task.method === 'spatial' ? 4 * cols : 0) + 16 * (task.time_group_params?.length ?? 0);
  return FRAMING_BYTES + strings + codesAndParams + extras;
}

/**
 * Throws ShardMismatchError naming the first field of `r` that the plan would not produce for
 * `task`. `dataSha256`: the SHA-256 of `r.data` when the caller has already computed it.
 */
export function checkShardRecord(r: LayerRecord, task: LayerTask, dataSha256?: string): void {
  const at = `shard of layer ${task.layer_index} (${task.name})`;
  const fail = (field: string, got: unknown, want: unknown): never => {
    throw new ShardMismatchError(`${at}: ${field} is ${JSON.stringify(got)}, the job's plan gives ${want}`, task.name, field);
  };
  const same = (field: string, got: unknown, want: unknown) => {
    if (JSON.stringify(got) !== JSON.stringify(want)) fail(field, got, JSON.stringify(want));
  };
  same('layer_index', r.layer_index, task.layer_index);
  same('layer_name', r.layer_name, task.name);
  same('shape', r.shape, task.shape);
  same('source_dtype', r.source_dtype, task.dtype);
  same('planned_bit_width', r.planned_bit_width, task.bits);
  const bits = allowedBits(task);
  if (!bits.includes(r.bit_width)) fail('bit_width', r.bit_width, bits.join(' or '));
  const { rows, cols } = matrixView(task.shape);
  const elements = rows * cols;
  if (r.bit_width === 16) {
    if (r.quant_type !== 'f16' && r.quant_type !== 'bf16') fail('quant_type', r.quant_type, '"f16" or "bf16"');
    same('method', r.method, 'none');
    same('group_size', r.group_size, 0);
    same('data length', r.data.byteLength, 2 * elements);
    same('scales length', r.scales.length, 0);
    same('zero_points length', r.zero_points.length, 0);
    same('equalization_scales', r.equalization_scales, null);
    same('act_bit_width', r.act_bit_width, null);
    same('time_group_params', r.time_group_params, null);
  } else {
    const dq = task.double_quant === true;
    same('quant_type', r.quant_type, quantTypeForBits(r.bit_width as 2 | 4 | 8, dq));
    same('method', r.method, task.method);
    same('group_size', r.group_size, task.group_size);
    const groups = rows * groupsPerRow(cols, task.group_size);
    // v2: data = codes then the integer group params; scales / zero_points = one factor per super-group
    const layout = dq ? v2Layout(r.bit_width as QuantBits, task.group_size as V2GroupSize) : null;
    same('data length', r.data.byteLength, packedBytes(elements, r.bit_width) + (layout ? v2ParamBytes(groups, layout) : 0));
    const params = layout ? v2SuperGroups(groups, layout) : groups;
    same('scales length', r.scales.length, params);
    same('zero_points length', r.zero_points.length, params);
    same('equalization_scales length', r.equalization_scales?.length ?? null, task.method === 'spatial' ? cols : null);
    same('act_bit_width', r.act_bit_width, task.act_bit_width);
    // stored as float32: compare with the task's values rounded the same way
    const tg = (g: { t_start: number; t_end: number; scale: number; zero_point: number }[] | null) =>
      g?.map((x) => [x.t_start, x.t_end, Math.fround(x.scale), Math.fround(x.zero_point)]) ?? null;
    same('time_group_params', tg(r.time_group_params), tg(task.time_group_params));
  }
  const sha = dataSha256 ?? createHash('sha256').update(r.data).digest('hex');
  if (sha !== r.data_sha256) fail('data_sha256', r.data_sha256, `the SHA-256 of its data, ${sha}`);
}
