import { loadCalibration } from '../../core/quant/calibration.js';
import { openModel } from '../../core/model/model-source.js';
import { buildPlan, planToJson, type Plan } from '../../core/plan/plan.js';
import { effectiveConfig, type ConfigValues } from '../options.js';
import { formatBytes, formatTable } from '../table.js';
import { printable } from '../printable.js';
import type { CommandIO } from './io.js';
import { renderAllocation } from '../allocation-render.js';

export async function planCommand([modelPath]: string[], values: ConfigValues & { json?: boolean; 'cache-dir'?: string }, io: CommandIO): Promise<number> {
  const cfg = effectiveConfig(values, io.env);
  let plan: Plan;
  if (cfg.enable_mixed_precision && cfg.allocation_strategy === 'measured') {
    // The measured strategy has to read the weights: plan exactly as quantize will.
    const { measuredPlan } = await import('../../coordinator/measured-plan.js');
    plan = await measuredPlan(modelPath!, cfg, values['cache-dir'] === undefined ? {} : { cacheDir: values['cache-dir'] });
  } else {
    const model = openModel(modelPath!);
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
    printable(l.name), `[${l.shape.join(',')}]`, l.dtype, l.bits, l.method, l.groupSize || '-', l.bytesIn, l.bytesOut,
    printable(l.reason + (l.notes.length ? `; ${l.notes.join('; ')}` : '')),
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
    ...plan.warnings.map((w) => `warning: ${printable(w)}`),
  ];
  return lines.join('\n');
}
