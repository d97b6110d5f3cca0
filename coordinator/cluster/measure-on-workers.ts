// allocation_strategy: measured in cluster mode: the measured allocation with its measurements
// done by the workers, after the job is claimed (workers take tasks only of a job a live
// coordinator holds). The measurement cache is read and written on the coordinator, as in a
// local run (LayerMeasurements); only what it lacks becomes measure tasks.

import type { KV, NatsConnection } from 'nats';
import { JobCancelledError } from '../../core/errors.js';
import { encodeMessage } from '../../core/cluster/messages.js';
import { cancelSubject } from '../../core/cluster/names.js';
import { workersBucket } from '../../core/cluster/jetstream-setup.js';
import { bounded } from '../../core/cluster/bounded.js';
import type { LayerMeasurer } from '../layer-measurements.js';
import type { PreparedJob } from '../job.js';
import { ClusterMeasurer } from './cluster-measurer.js';
import type { JobLease } from './job-lease.js';

/** Layers measured at once: every worker busy, without a read stream per layer of a huge model open at once. */
const MAX_LAYERS_IN_FLIGHT = 256;
/** How long a failed measurement spends telling NATS (which may be unreachable) that the job ended. */
const ABANDON_MS = 2_000;

export interface WorkerMeasurementOptions {
  nc: NatsConnection;
  kv: KV;
  runId: string;
  lease: JobLease;
  stallMs: number;
  log: (line: string) => void;
  cancel?: Promise<void>;
  /** given the way to stop the measurement, e.g. when the job's lease is lost */
  onStart?: (stop: (e: Error) => void) => void;
}

/** The measured allocation `use` runs with its candidates measured on the workers; the measured job. */
export async function withWorkerMeasurer(
  job: PreparedJob, o: WorkerMeasurementOptions, use: (measurer: LayerMeasurer, concurrency: number) => Promise<PreparedJob>,
): Promise<PreparedJob> {
  const t0 = performance.now();
  const measurer = await ClusterMeasurer.start({
    nc: o.nc, kv: o.kv, workersKv: await workersBucket(o.nc), jobId: job.id, runId: o.runId, stallMs: o.stallMs, log: o.log, cancel: o.cancel,
  });
  o.onStart?.((e) => measurer.fail(e));
  try {
    const measured = await use(measurer, Math.max(1, Math.min(MAX_LAYERS_IN_FLIGHT, job.plan.layers.length)));
    const m = measured.plan.measurements!;
    const c = measurer.counts;
    o.log(
      `coordinator: job ${job.id}: ${c.widths} measurements by workers (${c.published} measure tasks)` +
        `${c.reused ? `, ${m.measured - c.widths} from ${c.reused} results an earlier run left` : ''}, ${m.cached} from the cache, in ${((performance.now() - t0) / 1000).toFixed(2)} s`,
    );
    await measurer.forget().catch((e: Error) => o.log(`coordinator: warning: could not remove the measurement results from the job state: ${e.message}`));
    return measured;
  } catch (e) {
    // The job is over: workers drop this run's measure tasks still queued.
    try {
      o.nc.publish(cancelSubject(job.id), encodeMessage({ run_id: o.runId }));
    } catch {
      // the connection is closed: the tasks are dropped once the job state says the job failed
    }
    await bounded(o.lease.finish(e instanceof JobCancelledError ? 'cancelled' : 'failed', (e as Error).message), ABANDON_MS);
    throw e;
  } finally {
    measurer.close();
  }
}
