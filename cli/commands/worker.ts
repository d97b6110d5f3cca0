import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UsageError } from '../../core/errors.js';
import { natsOptionsFrom, type NatsValues } from '../../core/cluster/nats-options.js';
import { WorkerService } from '../../worker/cluster/worker-service.js';
import { HealthServer } from '../../core/grpc/health.js';
import { parseListenAddress, startMetricsServer } from '../../core/metrics/metrics-server.js';
import { WorkerMetrics } from '../../worker/cluster/worker-metrics.js';
import { resolveThreads } from '../../worker/thread-pool.js';
import { grpcClientTls, type GrpcTlsValues } from '../grpc-options.js';
import type { CommandIO } from './io.js';

export interface WorkerValues extends NatsValues, GrpcTlsValues {
  concurrency: number;
  threads: number;
  'model-root'?: string[];
  'work-dir'?: string;
  grace: number;
  id?: string;
  'health-listen'?: string;
  'metrics-listen'?: string;
  'allow-download'?: boolean;
  'allow-coordinator'?: string[];
}

export async function workerCommand(_args: string[], values: WorkerValues, io: CommandIO): Promise<number> {
  const nats = natsOptionsFrom(values, io.env, 'arrowquant-worker');
  if (!nats) throw new UsageError(`missing --nats URL (or ARROW_QUANT_NATS_URL)\nsee arrowquant worker --help`);
  // a bad address is a usage error before anything connects
  if (values['metrics-listen']) parseListenAddress(values['metrics-listen'], '--metrics-listen');
  const metrics = values['metrics-listen'] ? new WorkerMetrics() : null;
  const health = values['health-listen'] ? new HealthServer() : null;
  // Health follows the NATS connection until the worker stops; a reconnect then does not revive it.
  let stopping = false;
  const workDir = values['work-dir'] ?? join(tmpdir(), `arrowquant-worker-${process.pid}`);
  const worker = await WorkerService.start({
    nats,
    concurrency: values.concurrency,
    threads: resolveThreads(values.threads),
    modelRoots: values['model-root'] ?? [],
    workDir,
    ownWorkDir: values['work-dir'] === undefined,
    onConnection: (up) => stopping || health?.health.setStatus('', up ? 'SERVING' : 'NOT_SERVING'),
    grpcTls: grpcClientTls(values),
    allowCoordinators: values['allow-coordinator'] ?? listFromEnv(io.env.ARROW_QUANT_ALLOW_COORDINATOR),
    allowDownload: values['allow-download'] ?? false,
    id: values.id,
    log: (l) => io.err(l + '\n'),
    onLayer: metrics?.record,
  });
  const grace = values.grace * 1000;
  if (health) {
    const { address } = await health.start(values['health-listen']!);
    io.err(`worker ${worker.id}: health service on ${address}\n`);
  }
  let metricsServer: Awaited<ReturnType<typeof startMetricsServer>> | null = null;
  if (metrics) {
    metrics.attach(worker);
    try {
      metricsServer = await startMetricsServer(values['metrics-listen']!, metrics.registry);
    } catch (e) {
      await Promise.all([worker.stop(0), health?.stop()]);
      throw e;
    }
    io.err(`worker ${worker.id}: metrics on ${metricsServer.url}\n`);
  }
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      io.err(`worker ${worker.id}: ${sig}, stopping (in-flight tasks get ${grace / 1000}s)\n`);
      stopping = true;
      health?.health.setStatus('', 'NOT_SERVING');
      // Whatever NATS does, the process is gone within grace + 5 s: the watchdog fires a second
      // early so that exiting itself (handles, threads) fits in the bound too.
      setTimeout(() => {
        io.err(`worker ${worker.id}: did not stop within ${grace / 1000 + 4}s (NATS unreachable?); exiting\n`);
        // the default work dir is this process's own: it goes even on this path
        if (values['work-dir'] === undefined) rmSync(workDir, { recursive: true, force: true });
        process.exit(1);
      }, grace + 4_000).unref();
      void worker.stop(grace).then(async () => {
        await Promise.all([health?.stop(), metricsServer?.close()]);
        resolve();
      });
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  io.err(`worker ${worker.id}: stopped after ${worker.layersDone} layers; peak RSS ${Math.round(process.resourceUsage().maxRSS / 1024)} MB\n`);
  return 0;
}

/** A comma-separated environment variable as a list (unset or empty: undefined). */
function listFromEnv(raw: string | undefined): string[] | undefined {
  const items = (raw ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '');
  return items.length ? items : undefined;
}
