// The coordinator checks its own task messages against the schema workers validate them with,
// and against NATS's payload limit, before publishing any: a layer that cannot travel as a task
// (too many dimensions, a huge name) fails the job at once with its reason, instead of being
// refused by every worker while the job waits.

import { MalformedMessageError } from '../../core/cluster/errors.js';
import { encodeMessage, taskMessageSchema, type TaskMessage } from '../../core/cluster/messages.js';
import type { PreparedJob } from '../job.js';

/** Placeholder address of the size check: as long as any address a coordinator advertises. */
const LONGEST_ADDRESS = `${'h'.repeat(253)}:65535`;

export function checkOwnTasks(job: PreparedJob, runId: string, maxPayload = 1024 * 1024): void {
  for (const task of job.tasks) {
    const msg: TaskMessage = { task, run_id: runId, coordinator: LONGEST_ADDRESS, tls: false, allow_download: false };
    const r = taskMessageSchema.safeParse(msg);
    const at = `layer ${task.layer_index} (${task.name.length > 80 ? `${task.name.slice(0, 80)}…` : task.name})`;
    if (!r.success) {
      const i = r.error.issues[0]!;
      throw new MalformedMessageError(`${at} cannot be sent to cluster workers: ${i.path.join('.')}: ${i.message} (quantize it locally, without --nats)`, 'aq.tasks');
    }
    const size = encodeMessage(msg).byteLength;
    if (size > maxPayload) {
      throw new MalformedMessageError(`${at} cannot be sent to cluster workers: its task is ${size} bytes, over the NATS server's max_payload of ${maxPayload} (quantize it locally, without --nats)`, 'aq.tasks');
    }
  }
}
