import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UsageError } from '../../core/errors.js';
import { NATS_CLI_OPTIONS, NATS_OPTIONS_HELP, natsOptionsFrom } from '../../core/cluster/nats-options.js';
import { WorkerService } from '../../worker/cluster/worker-service.js';
import { HealthServer } from '../../core/grpc/health.js';
import { resolveThreads } from '../../worker/thread-pool.js';
import { GRPC_CLIENT_HELP, GRPC_CLIENT_OPTIONS, grpcClientTls } from '../grpc-options.js';
import { COMMON_OPTIONS, parseCommandArgs } from '../options.js';
import type { CommandIO } from './io.js';

const USAGE = 'arrowquant worker --nats URL [--concurrency N] [--threads N] [--model-root DIR …]';

const HELP = `${USAGE}

A long-running cluster worker: pulls layer tasks from NATS JetStream, reads each layer's bytes
from the model file when it lies under a --model-root (else downloads it from the coordinator
if the task allows), quantizes with the native kernels, uploads the shard over gRPC, then acks.
SIGTERM finishes in-flight tasks (or releases them after --grace seconds) and exits.

  --concurrency N            tasks at a time (default 1)
  --threads N                quantization threads (default 0 = all cores)
  --model-root DIR           a directory whose model files this worker may read (repeatable)
  --work-dir DIR             scratch space for shards in flight (default: the system temp dir)
  --grace S                  seconds in-flight tasks get on SIGTERM (default 30)
  --id NAME                  worker id (default: host-pid-random)
  --allow-download           download a tensor from its coordinator when the file is not under
                             a --model-root (only for jobs started with --allow-download)
  --allow-coordinator HOST   upload only to coordinators on this host (repeatable; "*.example.com"
                             for a domain). Default without gRPC TLS: loopback only; with TLS:
                             any host whose certificate the --grpc-tls-ca verifies
  --health-listen HOST:PORT  serve the standard gRPC health service (Kubernetes grpc probes):
                             SERVING while connected and pulling, NOT_SERVING while stopping

${NATS_OPTIONS_HELP}

${GRPC_CLIENT_HELP}`;

export async function workerCommand(argv: string[], io: CommandIO): Promise<number> {
  const { values } = parseCommandArgs(
    argv,
    {
      ...COMMON_OPTIONS, ...NATS_CLI_OPTIONS, ...GRPC_CLIENT_OPTIONS,
      concurrency: { type: 'string', default: '1' },
      threads: { type: 'string', default: '0' },
      'model-root': { type: 'string', multiple: true },
      'work-dir': { type: 'string' },
      grace: { type: 'string', default: '30' },
      id: { type: 'string' },
      'health-listen': { type: 'string' },
      'allow-download': { type: 'boolean' },
      'allow-coordinator': { type: 'string', multiple: true },
    },
    { min: 0, max: 0, usage: USAGE },
  );
  if (values.help) {
    io.out(HELP + '\n');
    return 0;
  }
  const int = (name: string, v: string, min: number) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name}: expected an integer ≥ ${min}, got ${JSON.stringify(v)}`);
    return n;
  };
  const nats = natsOptionsFrom(values, io.env, 'arrowquant-worker');
  if (!nats) throw new UsageError(`missing --nats URL (or ARROW_QUANT_NATS_URL)\nusage: ${USAGE}`);
  const worker = await WorkerService.start({
    nats,
    concurrency: int('concurrency', values.concurrency, 1),
    threads: resolveThreads(int('threads', values.threads, 0)),
    modelRoots: values['model-root'] ?? [],
    workDir: values['work-dir'] ?? join(tmpdir(), `arrowquant-worker-${process.pid}`),
    grpcTls: grpcClientTls(values),
    allowCoordinators: values['allow-coordinator'],
    allowDownload: values['allow-download'] ?? false,
    id: values.id,
    log: (l) => io.err(l + '\n'),
  });
  const grace = int('grace', values.grace, 0) * 1000;
  const health = values['health-listen'] ? new HealthServer() : null;
  if (health) {
    const { address } = await health.start(values['health-listen']!);
    io.err(`worker ${worker.id}: health service on ${address}\n`);
  }
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      io.err(`worker ${worker.id}: ${sig}, stopping (in-flight tasks get ${grace / 1000}s)\n`);
      health?.health.setStatus('', 'NOT_SERVING');
      // Whatever NATS does, the process is gone within grace + 5 s.
      setTimeout(() => {
        io.err(`worker ${worker.id}: did not stop within ${grace / 1000 + 5}s (NATS unreachable?); exiting\n`);
        process.exit(1);
      }, grace + 5_000).unref();
      void worker.stop(grace).then(async () => {
        await health?.stop();
        resolve();
      });
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  io.err(`worker ${worker.id}: stopped after ${worker.layersDone} layers; peak RSS ${Math.round(process.resourceUsage().maxRSS / 1024)} MB\n`);
  return 0;
}
