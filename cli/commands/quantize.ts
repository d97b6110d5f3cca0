import { UsageError } from '../../core/errors.js';
import { runLocalJob, type RunSummary } from '../../coordinator/local-run.js';
import { NATS_CLI_OPTIONS, NATS_OPTIONS_HELP, natsOptionsFrom } from '../../core/cluster/nats-options.js';
import { GRPC_SERVER_HELP, GRPC_SERVER_OPTIONS, grpcServerTls } from '../grpc-options.js';
import { COMMON_OPTIONS, CONFIG_OPTIONS, CONFIG_OPTIONS_HELP, effectiveConfig, parseCommandArgs } from '../options.js';
import { ProgressBar } from '../progress-bar.js';
import { formatBytes } from '../table.js';
import type { CommandIO } from './io.js';

const USAGE = 'arrowquant quantize <model> -o out.arrow [-c cfg.yaml] [options]';

const HELP = `${USAGE}

Quantizes every layer of <model> (a .safetensors file or a sharded directory) into one Arrow IPC
file (format.md), on this machine: an in-process coordinator and a pool of worker threads running
the native kernels. The file appears at -o only when the whole job succeeded.

  -o, --output FILE          the Arrow file to write (required)
  --json                     print the run summary as JSON on stdout

Cluster mode (--nats URL): this process coordinates the job; the workers of the cluster
quantize. The output is byte-identical to the local run. Run it again after a crash to resume.
  --listen HOST:PORT         where workers upload shards (default 0.0.0.0:0)
  --advertise HOST:PORT      the address workers use (default: this host's name and the port)
  --allow-download           workers that cannot read the model files download tensors from here
  --stall-timeout S          fail the job when no layer arrives for S seconds, saying why (default 600)
  --data DIR                 staging directory root (default: next to the output)

${NATS_OPTIONS_HELP}

${GRPC_SERVER_HELP}

${CONFIG_OPTIONS_HELP}`;

export async function quantizeCommand(argv: string[], io: CommandIO): Promise<number> {
  const { values, positionals } = parseCommandArgs(
    argv,
    {
      ...COMMON_OPTIONS, ...CONFIG_OPTIONS, ...NATS_CLI_OPTIONS, ...GRPC_SERVER_OPTIONS,
      output: { type: 'string', short: 'o' },
      listen: { type: 'string', default: '0.0.0.0:0' },
      advertise: { type: 'string' },
      'allow-download': { type: 'boolean' },
      'stall-timeout': { type: 'string' },
      data: { type: 'string' },
    },
    { min: 1, max: 1, usage: USAGE },
  );
  if (values.help) {
    io.out(HELP + '\n');
    return 0;
  }
  if (!values.output) throw new UsageError(`missing -o/--output FILE\nusage: ${USAGE}`);
  const cfg = effectiveConfig(values, io.env);
  const bar = io.isTTY ? new ProgressBar(io.err) : null;
  const nats = natsOptionsFrom(values, io.env, 'arrowquant-coordinator');
  let summary: RunSummary;
  try {
    if (nats) {
      const { runClusterJob } = await import('../../coordinator/cluster/cluster-run.js');
      summary = await runClusterJob(positionals[0]!, {
        output: values.output, config: cfg, nats, listen: values.listen, advertise: values.advertise, grpcTls: grpcServerTls(values),
        allowDownload: values['allow-download'] ?? false, dataDir: values.data, stallTimeoutMs: stallTimeout(values['stall-timeout']), onProgress: (p) => bar?.update(p),
        log: (l) => io.err(l + '\n'), cancel: interrupted(),
      });
    } else {
      summary = await runLocalJob(positionals[0]!, {
        output: values.output, config: cfg, onProgress: (p) => bar?.update(p), cancel: interrupted(), onWarning: (w) => io.err(`warning: ${w}\n`),
      });
    }
  } finally {
    bar?.done();
  }
  io.err(renderSummary(summary) + '\n');
  if (values.json) io.out(JSON.stringify(summary, null, 2) + '\n');
  return 0;
}

function stallTimeout(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const s = Number(v);
  if (!Number.isFinite(s) || s <= 0) throw new UsageError(`--stall-timeout: expected a number of seconds > 0, got ${JSON.stringify(v)}`);
  return s * 1000;
}

/** Resolves on the first SIGINT or SIGTERM: the job is cancelled and cleans up after itself. */
function interrupted(): Promise<void> {
  return new Promise((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
}

export function renderSummary(s: RunSummary): string {
  const bits = Object.entries(s.layers_per_bit_width).map(([b, n]) => `${n}×${b}-bit`).join(', ');
  const t = s.timings_s;
  return [
    `wrote ${s.output}`,
    `  ${s.layers} layers (${bits}); ${s.fallback_layers} redone at more bits`,
    `  bytes in ${s.bytes_in} (${formatBytes(s.bytes_in)}) → bytes out ${s.bytes_out} (${formatBytes(s.bytes_out)}), ${s.compression_ratio}× smaller`,
    `  weighted SQNR ${s.weighted_sqnr_db ?? '-'} dB, weighted cosine ${s.weighted_cosine ?? '-'}`,
    `  ${s.elapsed_s.toFixed(2)} s, ${s.input_gb_per_s.toFixed(3)} GB/s of input; kernel ${s.kernel}, ${s.threads} threads; peak RSS ${s.peak_rss_mb} MB`,
    `  thread time: read ${t.read}s, kernel ${t.kernel}s, hash ${t.hash}s, write ${t.write}s; merge ${t.merge}s`,
  ].join('\n');
}
