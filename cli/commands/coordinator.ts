// `arrowquant coordinator`: the long-running coordinator service — the job API over gRPC, jobs
// queued and run in turn on the cluster's workers, job state in NATS JetStream, Prometheus metrics.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { UsageError } from '../../core/errors.js';
import { connectNats, natsOptionsFrom, type NatsValues } from '../../core/cluster/nats-options.js';
import { ensureTaskQueue, jobsBucket, workersBucket } from '../../core/cluster/jetstream-setup.js';
import { JobQueue } from '../../coordinator/service/job-queue.js';
import { SERVICE_NAME_PATTERN } from '../../coordinator/service/job-store.js';
import { JobApiServer } from '../../coordinator/service/job-api-server.js';
import { PathPolicy } from '../../coordinator/service/path-policy.js';
import { CoordinatorMetrics } from '../../coordinator/service/coordinator-metrics.js';
import { loadToken } from '../../coordinator/service/bearer-auth.js';
import { serviceLog, type LogFormat } from '../../coordinator/service/service-log.js';
import { grpcServerTls, type GrpcTlsValues } from '../grpc-options.js';
import type { CommandIO } from './io.js';

export interface CoordinatorValues extends NatsValues, GrpcTlsValues {
  listen: string;
  data?: string;
  'model-root'?: string[];
  'output-root'?: string;
  'max-concurrent-jobs': number;
  'auth-token-file'?: string;
  'shard-listen': string;
  advertise?: string;
  'allow-download'?: boolean;
  'metrics-listen'?: string;
  'log-format': LogFormat;
  grace: number;
  name: string;
}

export async function coordinatorCommand(_args: string[], values: CoordinatorValues, io: CommandIO): Promise<number> {
  const nats = natsOptionsFrom(values, io.env, 'arrowquant-coordinator');
  if (!nats) throw new UsageError('missing --nats URL (or ARROW_QUANT_NATS_URL)\nsee arrowquant coordinator --help');
  if (!values.data) throw new UsageError('missing --data DIR (job staging and the default output root)\nsee arrowquant coordinator --help');
  const roots = values['model-root'] ?? [];
  if (roots.length === 0) throw new UsageError('missing --model-root DIR: submitted models are accepted only under one\nsee arrowquant coordinator --help');
  if (!SERVICE_NAME_PATTERN.test(values.name)) throw new UsageError(`--name "${values.name}" is not allowed; allowed: 1..32 characters [A-Za-z0-9_-]`);
  const outputRoot = values['output-root'] ?? join(values.data, 'out');
  mkdirSync(outputRoot, { recursive: true });
  mkdirSync(join(values.data, 'stage'), { recursive: true });
  const paths = new PathPolicy(roots, outputRoot);
  const token = loadToken(values['auth-token-file'], io.env);
  const tls = grpcServerTls(values);
  const log = serviceLog(values['log-format'], (l) => io.err(`${l}\n`));
  if (!token && !tls?.requireClientCert) log.warn('the job API has no authentication (give --auth-token-file or ARROW_QUANT_COORDINATOR_TOKEN, or mutual TLS)');
  if (token && !tls) log.warn('the bearer token crosses the network in plaintext: serve TLS (--grpc-tls-cert/--grpc-tls-key) outside loopback');

  const nc = await connectNats(nats);
  let queue: JobQueue | null = null;
  let api: JobApiServer | null = null;
  let metrics: CoordinatorMetrics | null = null;
  let left = 0;
  try {
    await ensureTaskQueue(nc);
    const workers = await workersBucket(nc);
    let snapshot = () => ({ queueDepth: 0, byState: { queued: 0, running: 0, done: 0, failed: 0, cancelled: 0 }, uploadsInFlight: 0 });
    metrics = values['metrics-listen'] ? new CoordinatorMetrics(() => snapshot()) : null;
    queue = await JobQueue.start({
      nats, nc, name: values.name, paths, dataDir: values.data, maxConcurrent: values['max-concurrent-jobs'],
      shardListen: values['shard-listen'], advertise: values.advertise, grpcTls: tls, allowDownload: values['allow-download'] ?? false,
      log, metrics: metrics ?? undefined,
    });
    const q = queue;
    snapshot = () => q.snapshot();
    api = new JobApiServer({ queue, token, tls, workers, clusterJobs: await jobsBucket(nc), graceMs: values.grace * 1000 });
    const { address } = await api.start(values.listen);
    if (metrics) log.info(`metrics on ${await metrics.listen(values['metrics-listen']!)}`);
    log.info(`job API listening on ${address}`, { name: values.name, model_roots: paths.modelRoots.join(','), output_root: paths.outputRoot, max_concurrent_jobs: values['max-concurrent-jobs'] });
    const sig = await new Promise<string>((resolve) => {
      process.once('SIGTERM', () => resolve('SIGTERM'));
      process.once('SIGINT', () => resolve('SIGINT'));
    });
    log.info(`${sig}: stopping; running jobs get ${values.grace}s to finish`);
  } finally {
    await api?.stop();
    left = (await queue?.stop(values.grace * 1000)) ?? 0;
    await metrics?.close();
    await nc.drain().catch(() => undefined);
  }
  if (left) {
    log.info(`${left} job(s) still running are left for the next coordinator to resume (their staged shards are kept)`);
    // Their drivers still hold connections open; the records are final, so the process may end.
    setImmediate(() => process.exit(0));
  } else log.info('stopped');
  return 0;
}
