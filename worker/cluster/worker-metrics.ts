// A worker's Prometheus metrics: layers done, failed (by outcome) and redelivered, bytes in and
// out, a per-layer duration histogram and the tasks in flight, plus Node's process metrics. One
// registry per worker (not prom-client's global one), labelled with the worker id.

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** What WorkerService reports about each task it handles. */
export type WorkerLayerEvent =
  | { type: 'redelivered' }
  | { type: 'done'; bytesIn: number; bytesOut: number; seconds: number }
  | { type: 'failed'; outcome: 'retried' | 'final' | 'refused' };

export class WorkerMetrics {
  readonly registry = new Registry();
  private inFlightSource: () => number = () => 0;
  private readonly done = new Counter({ name: 'arrowquant_worker_layers_done_total', help: 'layers quantized, uploaded and acknowledged', registers: [this.registry] });
  private readonly failed = new Counter({
    name: 'arrowquant_worker_layers_failed_total',
    help: 'layers that failed here: retried (released for redelivery), final (the job fails) or refused (not this worker\'s to read)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  private readonly redelivered = new Counter({ name: 'arrowquant_worker_layers_redelivered_total', help: 'tasks received that JetStream had delivered before', registers: [this.registry] });
  private readonly bytesIn = new Counter({ name: 'arrowquant_worker_bytes_in_total', help: 'tensor bytes of the layers done', registers: [this.registry] });
  private readonly bytesOut = new Counter({ name: 'arrowquant_worker_bytes_out_total', help: 'quantized bytes (bytes_out, format.md) of the layers done', registers: [this.registry] });
  private readonly duration = new Histogram({
    name: 'arrowquant_worker_layer_duration_seconds',
    help: 'time from receiving a task to its acknowledgement, for layers done',
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
    registers: [this.registry],
  });

  constructor() {
    const metrics = this;
    new Gauge({
      name: 'arrowquant_worker_layers_in_flight',
      help: 'tasks being worked on now',
      registers: [this.registry],
      collect() {
        this.set(metrics.inFlightSource());
      },
    });
    collectDefaultMetrics({ register: this.registry });
    for (const outcome of ['retried', 'final', 'refused'] as const) this.failed.inc({ outcome }, 0);
  }

  /** The worker these metrics describe: its id as a label on every series, its in-flight count. */
  attach(worker: { id: string; inFlightCount: number }): void {
    this.registry.setDefaultLabels({ worker: worker.id });
    this.inFlightSource = () => worker.inFlightCount;
  }

  readonly record = (e: WorkerLayerEvent): void => {
    if (e.type === 'redelivered') this.redelivered.inc();
    else if (e.type === 'failed') this.failed.inc({ outcome: e.outcome });
    else {
      this.done.inc();
      this.bytesIn.inc(e.bytesIn);
      this.bytesOut.inc(e.bytesOut);
      this.duration.observe(e.seconds);
    }
  };
}
