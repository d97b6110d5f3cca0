// A measure task on a worker: checked like a quantize task (schema, cancelled run, a live
// coordinator holding the job, shape × dtype = byte length, the file under the model roots),
// measured with the same LayerRunner.measure as a local run (so the same sums, bit for bit), the
// sums written to the job state under measureKey(), then acknowledged. Measurements read the model
// file where it is: a worker that cannot read it refuses (downloads serve quantize tasks only).

import type { JsMsg, KV } from 'nats';
import { MalformedMessageError, TaskRefusedError } from '../../core/cluster/errors.js';
import { decodeMessage, encodeMessage } from '../../core/cluster/messages.js';
import { measureMessageSchema, measureResultSchema, taskEncoding, type MeasureMessage, type MeasureResult } from '../../core/cluster/measure-messages.js';
import { measureKey } from '../../core/cluster/names.js';
import type { HeldJob } from '../../core/cluster/job-lease-state.js';
import type { LayerTask } from '../../core/job/layer-task.js';
import type { LayerRunner } from '../layer-runner.js';
import { checkTaskSize } from './task-guard.js';

/** What a measure task needs of the worker service. */
export interface MeasureTaskHost {
  id: string;
  runner: LayerRunner;
  /** the aq-jobs bucket */
  jobs: KV;
  ackWaitMs: number;
  /** tasks being worked on (released on a forced stop) */
  inFlight: Map<string, JsMsg>;
  log: (line: string) => void;
  isCancelled: (runId: string) => boolean;
  liveJob: (jobId: string, msg: JsMsg, tag: string) => Promise<HeldJob | null>;
  localInput: (task: LayerTask) => string | null;
  refuseMalformed: (msg: JsMsg, e: Error) => Promise<void>;
  failed: (msg: JsMsg, task: LayerTask, e: unknown, tag: string) => Promise<void>;
}

export async function handleMeasureTask(msg: JsMsg, host: MeasureTaskHost): Promise<void> {
  let mm: MeasureMessage;
  try {
    mm = decodeMessage(measureMessageSchema, msg.data, msg.subject);
  } catch (e) {
    return host.refuseMalformed(msg, e as Error);
  }
  const { task, widths } = mm;
  const what = `layer ${task.layer_index} (${task.name.length > 200 ? `${task.name.slice(0, 200)}…` : task.name}), group size ${task.group_size}, ${taskEncoding(task)}, of job ${task.job_id}`;
  const tag = `the measurement of ${what}`;
  if (host.isCancelled(mm.run_id)) {
    msg.term();
    return;
  }
  const held = await host.liveJob(task.job_id, msg, tag);
  if (!held) return;
  if (held.state.run_id !== mm.run_id) {
    // A run that died while measuring: the run holding the job now asks again for what it needs.
    msg.term();
    host.log(`worker ${host.id}: dropped ${tag}: run ${mm.run_id} no longer holds the job`);
    return;
  }
  const key = measureKey(task.job_id, task.layer_index, taskEncoding(task), task.group_size);
  if (await alreadyMeasured(host.jobs, key, mm.measure_id)) {
    await msg.ackAck().catch(() => msg.ack());
    host.log(`worker ${host.id}: skipped ${tag}: its result is already in the job state`);
    return;
  }
  const flightKey = `${key}/${mm.measure_id}`;
  host.inFlight.set(flightKey, msg);
  const alive = setInterval(() => msg.working(), Math.max(250, host.ackWaitMs / 3));
  const t0 = performance.now();
  try {
    checkTaskSize(task, tag, host.id);
    const local = host.localInput(task);
    if (!local) {
      throw new TaskRefusedError(
        `worker ${host.id} refused ${tag}: ${task.file} is not under its model roots; a measurement reads the model file in place (downloads serve quantize tasks only)`,
        task.name, host.id,
      );
    }
    const stats = await host.runner.measure({ ...task, file: local }, widths);
    const result: MeasureResult = { measure_id: mm.measure_id, worker: host.id, stats: widths.map((bits) => ({ bits, ...stats.get(bits)! })) };
    // What the coordinator will check, checked first: an overflowing sum fails here, naming the layer.
    const r = measureResultSchema.safeParse(result);
    if (!r.success) {
      const i = r.error.issues[0]!;
      throw new MalformedMessageError(`worker ${host.id}: ${tag}: its result cannot be recorded: ${i.path.join('.')}: ${i.message}`, key);
    }
    await host.jobs.put(key, encodeMessage(result));
    await msg.ackAck().catch(() => msg.ack());
    host.log(`worker ${host.id}: measured ${what} at ${widths.join(', ')} bits in ${((performance.now() - t0) / 1000).toFixed(2)}s`);
  } catch (e) {
    await host.failed(msg, task, e, tag);
  } finally {
    clearInterval(alive);
    host.inFlight.delete(flightKey);
  }
}

/** A redelivered measure task whose result is already recorded (the worker died before its ack). */
async function alreadyMeasured(jobs: KV, key: string, id: string): Promise<boolean> {
  try {
    const e = await jobs.get(key);
    return !!e && e.operation === 'PUT' && e.value.length > 0 && decodeMessage(measureResultSchema, e.value, key).measure_id === id;
  } catch {
    return false;
  }
}
