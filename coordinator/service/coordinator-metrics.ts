// Prometheus metrics of the coordinator service (prom-client), served on --metrics-listen at
// /metrics. Layer counts and bytes come from the jobs' progress, failures from the workers' events
// on NATS, layer durations and uploads in flight from the job driver (runClusterJob's hooks), queue
// depth and jobs by state from the service's own records.

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { JOB_STATES, type JobStateName } from '../../core/grpc/jobs-proto.js';
import { startMetricsServer, type MetricsServer } from '../../core/metrics/metrics-server.js';

export class CoordinatorMetrics {
  readonly registry = new Registry();
  readonly layersDone: Counter;
  readonly layersFailed: Counter;
  readonly bytesIn: Counter;
  readonly bytesOut: Counter;
  readonly jobDuration: Histogram;
  readonly layerDuration: Histogram;
  private server: MetricsServer | null = null;

  constructor(snapshot: () => { queueDepth: number; byState: Record<JobStateName, number>; uploadsInFlight: number }) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.layersDone = new Counter({ name: 'arrowquant_coordinator_layers_done_total', help: 'layers staged by workers and accepted by this coordinator', registers });
    this.layersFailed = new Counter({ name: 'arrowquant_coordinator_layers_failed_total', help: 'layer failures reported by workers (a failed layer is redelivered until its deliveries run out)', registers });
    this.bytesIn = new Counter({ name: 'arrowquant_coordinator_bytes_in_total', help: 'source bytes of the layers staged', registers });
    this.bytesOut = new Counter({ name: 'arrowquant_coordinator_bytes_out_total', help: 'bytes of the output files written', registers });
    this.jobDuration = new Histogram({
      name: 'arrowquant_coordinator_job_duration_seconds', help: 'wall time of finished jobs, by result', labelNames: ['state'], registers,
      buckets: [1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600],
    });
    this.layerDuration = new Histogram({
      name: 'arrowquant_coordinator_layer_duration_seconds', help: 'from publishing a layer\'s task to its shard staged here (queue wait, quantize, upload)', registers,
      buckets: [0.05, 0.25, 1, 5, 15, 60, 300, 900, 3600],
    });
    new Gauge({
      name: 'arrowquant_coordinator_uploads_in_flight', help: 'shard uploads from workers being received or staged now, over all running jobs', registers,
      collect() {
        this.set(snapshot().uploadsInFlight);
      },
    });
    new Gauge({
      name: 'arrowquant_coordinator_queue_depth', help: 'jobs queued and not yet running', registers,
      collect() {
        this.set(snapshot().queueDepth);
      },
    });
    new Gauge({
      name: 'arrowquant_coordinator_jobs', help: 'jobs this coordinator knows, by state', labelNames: ['state'], registers,
      collect() {
        const s = snapshot().byState;
        for (const state of JOB_STATES) this.set({ state }, s[state]);
      },
    });
  }

  /** Serves GET /metrics on "host:port" (core/metrics/metrics-server.ts); resolves with its URL. */
  async listen(listen: string): Promise<string> {
    this.server = await startMetricsServer(listen, this.registry);
    return this.server.url;
  }

  async close(): Promise<void> {
    await this.server?.close();
    this.server = null;
  }
}
