// Prometheus metrics of the coordinator service (prom-client), served on --metrics-listen at
// /metrics. Layer counts and bytes come from the jobs' progress, failures from the workers' events
// on NATS, queue depth and jobs by state from the service's own records.

import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { JOB_STATES, type JobStateName } from '../../core/grpc/jobs-proto.js';
import { parseListenAddress } from '../../core/grpc/proto.js';
import { GrpcListenError } from '../../core/grpc/errors.js';

export class CoordinatorMetrics {
  readonly registry = new Registry();
  readonly layersDone: Counter;
  readonly layersFailed: Counter;
  readonly bytesIn: Counter;
  readonly bytesOut: Counter;
  readonly jobDuration: Histogram;
  private server: Server | null = null;

  constructor(snapshot: () => { queueDepth: number; byState: Record<JobStateName, number> }) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'arrowquant_coordinator_' });
    this.layersDone = new Counter({ name: 'arrowquant_coordinator_layers_done_total', help: 'layers staged by workers and accepted by this coordinator', registers });
    this.layersFailed = new Counter({ name: 'arrowquant_coordinator_layers_failed_total', help: 'layer failures reported by workers (a failed layer is redelivered until its deliveries run out)', registers });
    this.bytesIn = new Counter({ name: 'arrowquant_coordinator_bytes_in_total', help: 'source bytes of the layers staged', registers });
    this.bytesOut = new Counter({ name: 'arrowquant_coordinator_bytes_out_total', help: 'bytes of the output files written', registers });
    this.jobDuration = new Histogram({
      name: 'arrowquant_coordinator_job_duration_seconds', help: 'wall time of finished jobs, by result', labelNames: ['state'], registers,
      buckets: [1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600],
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

  /** Serves GET /metrics on "host:port"; resolves with the bound address. */
  async listen(listen: string): Promise<string> {
    const { host, port } = parseListenAddress(listen);
    const server = createServer((req, res) => {
      if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: the metrics are at GET /metrics\n');
        return;
      }
      this.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(text),
        (e: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${(e as Error).message}\n`),
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e) => reject(new GrpcListenError(`cannot serve metrics on ${listen}: ${e.message}`, listen, { cause: e })));
      server.listen(port, host.replace(/^\[|\]$/g, ''), () => resolve());
    });
    this.server = server;
    const addr = server.address() as { port: number };
    return `${host}:${addr.port}`;
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (s) await new Promise<void>((resolve) => { s.close(() => resolve()); s.closeAllConnections(); });
  }
}
