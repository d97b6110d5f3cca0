// The test plays a coordinator: it writes a live job state for a job id (the lease workers
// check before they act on a task) and builds task messages for it.

import { encodeMessage, type TaskMessage } from '../../core/cluster/messages.js';
import { jobsBucket } from '../../core/cluster/jetstream-setup.js';
import type { LayerTask } from '../../core/job/layer-task.js';
import type { NatsConnection } from 'nats';

/** A running job held by "this test" at `coordinator`, with a lease long enough for any test. */
export async function holdJob(nc: NatsConnection, jobId: string, coordinator: string, leaseMs = 600_000): Promise<void> {
  const kv = await jobsBucket(nc);
  await kv.put(jobId, encodeMessage({
    job_id: jobId, model: 'test', output: '/nonexistent/test.arrow', layers_total: 1, state: 'running', coordinator,
    run_id: '0123456789abcdef', holder: 'test pid 0', lease_ms: leaseMs,
  }));
}

export function taskMessage(task: LayerTask, jobId: string, coordinator: string, extra: Partial<TaskMessage> = {}): TaskMessage {
  return { task: { ...task, job_id: jobId }, run_id: '0123456789abcdef', coordinator, tls: false, allow_download: false, ...extra };
}
