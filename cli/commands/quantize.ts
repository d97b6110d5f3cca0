import { UsageError } from '../../core/errors.js';
import { runLocalJob, type RunSummary } from '../../coordinator/local-run.js';
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

${CONFIG_OPTIONS_HELP}`;

export async function quantizeCommand(argv: string[], io: CommandIO): Promise<number> {
  const { values, positionals } = parseCommandArgs(
    argv,
    { ...COMMON_OPTIONS, ...CONFIG_OPTIONS, output: { type: 'string', short: 'o' } },
    { min: 1, max: 1, usage: USAGE },
  );
  if (values.help) {
    io.out(HELP + '\n');
    return 0;
  }
  if (!values.output) throw new UsageError(`missing -o/--output FILE\nusage: ${USAGE}`);
  const cfg = effectiveConfig(values, io.env);
  const bar = io.isTTY ? new ProgressBar(io.err) : null;
  let summary: RunSummary;
  try {
    summary = await runLocalJob(positionals[0]!, { output: values.output, config: cfg, onProgress: (p) => bar?.update(p) });
  } finally {
    bar?.done();
  }
  io.err(renderSummary(summary) + '\n');
  if (values.json) io.out(JSON.stringify(summary, null, 2) + '\n');
  return 0;
}

export function renderSummary(s: RunSummary): string {
  const bits = Object.entries(s.layers_per_bit_width).map(([b, n]) => `${n}×${b}-bit`).join(', ');
  const t = s.timings_s;
  return [
    `wrote ${s.output}`,
    `  ${s.layers} layers (${bits}); ${s.fallback_layers} redone at more bits`,
    `  bytes in ${s.bytes_in} (${formatBytes(s.bytes_in)}) → bytes out ${s.bytes_out} (${formatBytes(s.bytes_out)}), ${s.compression_ratio}× smaller`,
    `  weighted SQNR ${s.weighted_sqnr_db ?? '-'} dB, weighted cosine ${s.weighted_cosine ?? '-'}`,
    `  ${s.elapsed_s.toFixed(2)} s, ${s.input_gb_per_s.toFixed(3)} GB/s of input; kernel ${s.kernel}, ${s.threads} threads`,
    `  thread time: read ${t.read}s, kernel ${t.kernel}s, hash ${t.hash}s, write ${t.write}s; merge ${t.merge}s`,
  ].join('\n');
}
