import { loadCalibration } from '../../core/quant/calibration.js';
import { openModel } from '../../core/model/model-source.js';
import { buildPlan, planToJson, type Plan } from '../../core/plan/plan.js';
import { COMMON_OPTIONS, CONFIG_OPTIONS, CONFIG_OPTIONS_HELP, effectiveConfig, parseCommandArgs } from '../options.js';
import { formatBytes, formatTable } from '../table.js';
import type { CommandIO } from './io.js';
import { renderAllocation } from '../allocation-render.js';

export const PLAN_USAGE = 'arrowquant plan <model> [-c cfg.yaml] [options]';

export const PLAN_HELP = `${PLAN_USAGE}

Reads the safetensors headers only (no weights; with --strategy measured it measures every layer
at each candidate width × group size and picks the exact optimum for the size target) and prints
the per-layer plan: bit width, method, group size and exact bytes_out (format.md), with totals
against the size target. --json prints {"layers": [...], "total_bytes_in", "total_bytes_out",
"target_bytes", "target_met"}; with --strategy measured also "allocation" (heuristic and uniform
INT4 side by side, and the size–error curve) and "measurements".

  --cache-dir DIR            measurement cache for --strategy measured
                             (default $XDG_CACHE_HOME/arrowquant or ~/.cache/arrowquant)

${CONFIG_OPTIONS_HELP}`;

export async function planCommand(argv: string[], io: CommandIO): Promise<number> {
  const { values, positionals } = parseCommandArgs(argv, { ...COMMON_OPTIONS, ...CONFIG_OPTIONS, 'cache-dir': { type: 'string' } }, { min: 1, max: 1, usage: PLAN_USAGE });
  if (values.help) {
    io.out(PLAN_HELP + '\n');
    return 0;
  }
  const cfg = effectiveConfig(values, io.env);
  let plan: Plan;
  if (cfg.enable_mixed_precision && cfg.allocation_strategy === 'measured') {
    // The measured strategy has to read the weights: plan exactly as quantize will.
    const { measuredPlan } = await import('../../coordinator/measured-plan.js');
    plan = await measuredPlan(positionals[0]!, cfg, values['cache-dir'] === undefined ? {} : { cacheDir: values['cache-dir'] });
  } else {
    const model = openModel(positionals[0]!);
    plan = buildPlan(model, cfg, cfg.calibration_path ? loadCalibration(cfg.calibration_path) : null);
  }
  io.err(renderPlan(plan) + '\n');
  if (plan.allocation) io.err(renderAllocation(plan.allocation) + '\n');
  if (plan.measurements) io.err(`measurements: ${plan.measurements.measured} measured, ${plan.measurements.cached} from the cache${plan.measurements.cacheDir ? ` (${plan.measurements.cacheDir})` : ''}\n`);
  if (values.json) io.out(JSON.stringify(planToJson(plan), null, 2) + '\n');
  return 0;
}

export function renderPlan(plan: Plan): string {
  const rows = plan.layers.map((l) => [
    l.name, `[${l.shape.join(',')}]`, l.dtype, l.bits, l.method, l.groupSize || '-', l.bytesIn, l.bytesOut,
    l.reason + (l.notes.length ? `; ${l.notes.join('; ')}` : ''),
  ]);
  const table = formatTable(['name', 'shape', 'dtype', 'bits', 'method', 'group', 'bytes in', 'bytes out', 'why'], rows, new Set([3, 5, 6, 7]));
  const hist = new Map<number, number>();
  for (const l of plan.layers) hist.set(l.bits, (hist.get(l.bits) ?? 0) + 1);
  const bits = [...hist].sort((a, b) => a[0] - b[0]).map(([b, n]) => `${n}×${b}-bit`).join(', ');
  const ratio = plan.totalBytesOut ? (plan.totalBytesIn / plan.totalBytesOut).toFixed(2) : '-';
  const target =
    plan.targetBytes === null
      ? 'no size target'
      : `target ${plan.targetBytes} bytes (${formatBytes(plan.targetBytes)}): ${plan.targetMet ? 'met' : 'NOT met'}`;
  const lines = [
    table,
    '',
    `${plan.layers.length} layers (${bits}); modality ${plan.modality ?? 'unknown'}`,
    `total: bytes in ${plan.totalBytesIn} (${formatBytes(plan.totalBytesIn)}), bytes out ${plan.totalBytesOut} (${formatBytes(plan.totalBytesOut)}), ${ratio}× smaller; ${target}`,
    ...plan.warnings.map((w) => `warning: ${w}`),
  ];
  return lines.join('\n');
}
