// The measured allocation's comparison as text: the chosen optimum beside the heuristic and
// uniform INT4, each with the optimum at its own size (for `plan` and the `quantize` summary).

import { errorReductionPct, type AllocationPoint, type AllocationSummary } from '../core/plan/allocation-summary.js';
import { formatTable } from './table.js';

const db = (x: number | null) => (x === null ? '-' : `${x.toFixed(2)} dB`);
const err = (x: number) => (x >= 100 ? x.toFixed(0) : x.toPrecision(4));

/** "−96.5% error" relative to `base`, or "+12.0% error". */
export function versus(base: AllocationPoint, p: AllocationPoint): string {
  const pct = -errorReductionPct(base, p);
  const d = base.weighted_sqnr_db !== null && p.weighted_sqnr_db !== null ? p.weighted_sqnr_db - base.weighted_sqnr_db : null;
  const dSqnr = d === null ? '' : `, ${d >= 0 ? '+' : '−'}${Math.abs(d).toFixed(2)} dB`;
  return `${pct <= 0 ? '−' : '+'}${Math.abs(pct).toFixed(1)}% error${dSqnr}`;
}

export function renderAllocation(a: AllocationSummary): string {
  const row = (name: string, p: AllocationPoint, vs: string) => [name, p.bytes_out, err(p.total_error), db(p.weighted_sqnr_db), p.weighted_cosine?.toFixed(5) ?? '-', vs];
  const rows = [row(a.target_bytes === null ? 'measured (fewest bytes meeting the bars)' : 'measured optimum', a.chosen, '')];
  for (const [name, p] of [['heuristic', a.heuristic], [`uniform INT4 g${a.uniform_int4.group_size}`, a.uniform_int4]] as const) {
    rows.push(row(name, p, ''));
    const o = p.optimum_at_same_bytes;
    rows.push(o ? row('  measured optimum at its size', o, versus(p, o)) : ['  measured optimum at its size', '-', 'does not fit', '', '', '']);
  }
  const solver = a.solver === 'dp' ? 'exact (dynamic programming)' : a.solver === 'lagrangian' ? `Lagrangian bound, optimality gap ${err(a.optimality_gap)}` : 'no size target';
  return [
    `measured allocation: ${solver}, over ${a.candidates} candidates; total error = Σ params × ‖W−Ŵ‖²/‖W‖²`,
    formatTable(['allocation', 'bytes out', 'total error', 'weighted SQNR', 'weighted cosine', 'vs it'], rows, new Set([1, 2, 3, 4])),
  ].join('\n');
}

/** Lines for the quantize summary: how the written allocation compares with the heuristic and with uniform INT4, at the same size. */
export function allocationSummaryLines(a: AllocationSummary): string[] {
  const u = a.uniform_int4;
  const h = a.heuristic;
  const lines = [`  predicted total error ${err(a.chosen.total_error)} (Σ params × relative squared error)`];
  if (h.optimum_at_same_bytes) lines.push(`  vs the heuristic at its ${h.bytes_out} bytes: the optimum there has ${versus(h, h.optimum_at_same_bytes)}`);
  const bytesPct = ((100 * (a.chosen.bytes_out - u.bytes_out)) / u.bytes_out).toFixed(1);
  const atSame = u.optimum_at_same_bytes
    ? `the optimum at uniform INT4's bytes has ${versus(u, u.optimum_at_same_bytes)}`
    : `its size is below the smallest the measured candidates reach`;
  lines.push(`  vs uniform INT4 g${u.group_size} (${u.bytes_out} bytes, error ${err(u.total_error)}, ${db(u.weighted_sqnr_db)}): this file has ${Number(bytesPct) >= 0 ? '+' : '−'}${Math.abs(Number(bytesPct))}% bytes, ${versus(u, a.chosen)}; ${atSame}`);
  return lines;
}
