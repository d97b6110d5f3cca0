import { openModel } from '../../core/model/model-source.js';
import { configWarnings } from '../../core/plan/plan.js';
import { runLocalJob, type RunSummary } from '../../coordinator/local-run.js';
import { natsOptionsFrom, type NatsValues } from '../../core/cluster/nats-options.js';
import { grpcServerTls, type GrpcTlsValues } from '../grpc-options.js';
import { effectiveConfig, type ConfigValues } from '../options.js';
import { ProgressBar } from '../progress-bar.js';
import { formatBytes } from '../table.js';
import { printable } from '../printable.js';
import type { CommandIO } from './io.js';
import { allocationSummaryLines } from '../allocation-render.js';

export interface QuantizeValues extends ConfigValues, NatsValues, GrpcTlsValues {
  output: string;
  json?: boolean;
  listen: string;
  advertise?: string;
  'allow-download'?: boolean;
  'stall-timeout'?: number;
  data?: string;
  'cache-dir'?: string;
  'reorder-window-mb': number;
  'max-uploads': number;
}

export async function quantizeCommand([modelPath]: string[], values: QuantizeValues, io: CommandIO): Promise<number> {
  const cfg = effectiveConfig(values, io.env);
  // the job builds its plan inside; what the configuration asks for in vain is said up front
  const warnings: string[] = [];
  const warn = (w: string) => {
    warnings.push(w);
    io.err(`warning: ${printable(w)}\n`);
  };
  configWarnings(openModel(modelPath!), cfg, cfg.calibration_path !== null).forEach(warn);
  const bar = io.isTTY ? new ProgressBar(io.err) : null;
  const nats = natsOptionsFrom(values, io.env, 'arrowquant-coordinator');
  let summary: RunSummary;
  const interrupt = onInterrupt();
  try {
    if (nats) {
      const { runClusterJob } = await import('../../coordinator/cluster/cluster-run.js');
      summary = await runClusterJob(modelPath!, {
        output: values.output, config: cfg, nats, listen: values.listen, advertise: values.advertise, grpcTls: grpcServerTls(values),
        allowDownload: values['allow-download'] ?? false, dataDir: values.data,
        stallTimeoutMs: values['stall-timeout'] === undefined ? undefined : values['stall-timeout'] * 1000, onProgress: (p) => bar?.update(p),
        reorderWindowBytes: values['reorder-window-mb'] * (1 << 20), maxConcurrentUploads: values['max-uploads'],
        log: (l) => io.err(l + '\n'), cancel: interrupt.signalled,
        ...(values['cache-dir'] === undefined ? {} : { measurementCacheDir: values['cache-dir'] }),
      });
    } else {
      summary = await runLocalJob(modelPath!, {
        output: values.output, config: cfg, onProgress: (p) => bar?.update(p), cancel: interrupt.signalled, onWarning: warn,
        ...(values['cache-dir'] === undefined ? {} : { measurementCacheDir: values['cache-dir'] }),
      });
    }
  } finally {
    interrupt.dispose();
    bar?.done();
  }
  io.err(renderSummary(summary) + '\n');
  if (values.json) io.out(JSON.stringify({ ...summary, warnings }, null, 2) + '\n');
  return 0;
}

/**
 * `signalled` resolves on the first SIGINT or SIGTERM: the job is cancelled and cleans up after
 * itself. dispose() removes the handlers (main() may run several jobs in one process).
 */
function onInterrupt(): { signalled: Promise<void>; dispose: () => void } {
  let resolve!: () => void;
  const signalled = new Promise<void>((r) => (resolve = r));
  const handler = () => resolve();
  process.once('SIGINT', handler);
  process.once('SIGTERM', handler);
  return {
    signalled,
    dispose: () => {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
    },
  };
}

export function renderSummary(s: RunSummary): string {
  const bits = Object.entries(s.layers_per_bit_width).map(([b, n]) => `${n}×${b}-bit`).join(', ');
  const t = s.timings_s;
  return [
    `wrote ${s.output}`,
    `  ${s.layers} layers (${bits}); ${s.fallback_layers} redone at more bits`,
    `  bytes in ${s.bytes_in} (${formatBytes(s.bytes_in)}) → bytes out ${s.bytes_out} (${formatBytes(s.bytes_out)}), ${s.compression_ratio}× smaller`,
    `  weighted SQNR ${s.weighted_sqnr_db ?? '-'} dB, weighted cosine ${s.weighted_cosine ?? '-'}`,
    ...(s.allocation ? allocationSummaryLines(s.allocation) : []),
    `  ${s.elapsed_s.toFixed(2)} s, ${s.input_gb_per_s.toFixed(3)} GB/s of input; kernel ${s.kernel}, ${s.threads} threads; peak RSS ${s.peak_rss_mb} MB`,
    `  thread time: read ${t.read}s, kernel ${t.kernel}s, hash ${t.hash}s, write ${t.write}s; merge ${t.merge}s`,
  ].join('\n');
}
