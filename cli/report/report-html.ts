// The report as one self-contained HTML page: inline CSS and SVG, no scripts, nothing fetched.

import { errorReductionPct, type AllocationPoint } from '../../core/plan/allocation-summary.js';
import type { ReportData } from './report-data.js';
import { barChart, curveChart, escapeXml as esc, type Point } from './svg-charts.js';

export const BIT_COLORS: Record<number, string> = { 2: '#d95f02', 4: '#1b9e77', 8: '#7570b3', 16: '#999999', 32: '#666666' };

const CSS = `
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1160px;color:#222;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.sub{color:#666;margin:0 0 16px}
.cards{display:grid;grid-template-columns:repeat(4,1fr);gap:10px}
.card{border:1px solid #ddd;border-radius:6px;padding:10px 12px}.card b{display:block;font-size:20px}
table{border-collapse:collapse;width:100%;font-size:12.5px}th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
svg{border:1px solid #eee;border-radius:6px;margin:6px 0}
svg .title{font-size:14px;font-weight:600}svg .tick{font-size:11px;fill:#555}svg .axis{font-size:12px;fill:#333}
svg .grid{stroke:#eee}svg .curve{stroke:#1b9e77;stroke-width:2}svg .mark{font-size:12px}
svg circle.curve{fill:#1b9e77}svg circle.chosen{fill:#1b9e77;stroke:#000;stroke-width:1.5}
svg circle.heuristic{fill:#d95f02}svg circle.uniform{fill:#7570b3}
.legend span{display:inline-block;margin-right:14px}.legend i{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px}
`;

const num = (x: number, d = 0) => x.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });
const signedPct = (x: number) => `${x < 0 ? '−' : '+'}${num(Math.abs(x), 1)}%`;
const dB = (x: number | null) => (x === null ? 'exact' : `${x.toFixed(2)} dB`);

function comparisonRows(d: ReportData): string {
  const a = d.allocation;
  if (!a) return '<p>This file was not written with <code>allocation_strategy: measured</code>: it holds no size–error curve.</p>';
  const row = (name: string, p: AllocationPoint, vs: AllocationPoint | null) =>
    `<tr><td>${esc(name)}</td><td class="n">${num(p.bytes_out)}</td><td class="n">${num(p.total_error, 1)}</td><td class="n">${dB(p.weighted_sqnr_db)}</td><td class="n">${vs ? signedPct(-errorReductionPct(vs, p)) : ''}</td></tr>`;
  const rows = [row('measured optimum (this file)', a.chosen, null)];
  for (const [name, p] of [['heuristic', a.heuristic], [`uniform INT4 g${a.uniform_int4.group_size}`, a.uniform_int4]] as const) {
    rows.push(row(name, p, null));
    if (p.optimum_at_same_bytes) rows.push(row(`  measured optimum at ${name}'s size`, p.optimum_at_same_bytes, p));
  }
  return `<table><thead><tr><th>allocation (predicted from the measured errors)</th><th class="n">bytes out</th><th class="n">total error</th><th class="n">weighted SQNR</th><th class="n">error vs the row above</th></tr></thead><tbody>${rows.join('')}</tbody></table>
<p class="sub">The measured candidates: every 2-D layer at 2, 4 or 8 bits × group sizes 32–256, or 16-bit; sensitive layers (embeddings, heads) at 8 bits or more; 1-D layers and manual widths fixed. Uniform INT4 also quantizes the sensitive and 1-D layers at 4 bits, so its point can lie below the curve.</p>
<p class="sub">Solver: ${esc(a.solver)}${a.solver === 'lagrangian' ? `, optimality gap ${num(a.optimality_gap, 3)}` : a.solver === 'dp' ? ' (exact)' : ''}; ${num(a.candidates)} candidates. Total error = Σ over layers params × ‖W−Ŵ‖²/‖W‖².</p>`;
}

export function renderReportHtml(d: ReportData): string {
  const s = d.summary;
  const bitsChart = barChart(
    'chart-bits', 'Bits per layer along depth', 'bits',
    d.layers.map((l) => ({ label: l.name, value: l.bits, color: BIT_COLORS[l.bits] ?? '#333' })), 16, [2, 4, 8, 16],
  );
  const quantized = d.layers.filter((l) => l.sqnr_db !== null);
  const sqnrMax = Math.max(10, ...quantized.map((l) => l.sqnr_db!));
  const top = Math.ceil(sqnrMax / 10) * 10;
  const sqnrChart = barChart(
    'chart-sqnr', 'SQNR per layer (exact 16-bit layers have none)', 'SQNR, dB',
    d.layers.map((l) => ({ label: l.name, value: l.sqnr_db ?? 0, color: l.sqnr_db === null ? 'none' : BIT_COLORS[l.bits] ?? '#333' })),
    top, Array.from({ length: top / 10 + 1 }, (_, k) => k * 10),
  );
  let curve = '';
  if (d.allocation) {
    const a = d.allocation;
    const pts: Point[] = a.curve.map((p) => ({ x: p.bytes_out, y: p.total_error, label: `optimum within ${p.budget} bytes`, kind: 'curve' }));
    const marks: Point[] = [
      { x: a.chosen.bytes_out, y: a.chosen.total_error, label: 'this file', kind: 'chosen' },
      { x: a.heuristic.bytes_out, y: a.heuristic.total_error, label: 'heuristic', kind: 'heuristic' },
      { x: a.uniform_int4.bytes_out, y: a.uniform_int4.total_error, label: `uniform INT4 g${a.uniform_int4.group_size}`, kind: 'uniform' },
    ];
    curve = curveChart('chart-curve', 'Size–error curve: the measured optimum at each budget', 'bytes out', 'total error (log)', pts, marks);
  }
  const legend = Object.entries(BIT_COLORS).filter(([b]) => d.layers.some((l) => String(l.bits) === b)).map(([b, c]) => `<span><i style="background:${c}"></i>${b}-bit</span>`).join('');
  const layerRows = d.layers
    .map(
      (l) =>
        `<tr><td class="n">${l.index}</td><td>${esc(l.name)}</td><td>[${l.shape.join(', ')}]</td><td class="n">${l.bits === l.planned_bits ? l.bits : `${l.planned_bits}→${l.bits}`}</td><td>${esc(l.method)}</td><td class="n">${l.group_size || '-'}</td><td class="n">${num(l.bytes_out)}</td><td class="n">${dB(l.sqnr_db)}</td><td class="n">${l.cosine.toFixed(5)}</td><td class="n">${l.relative_error === 0 ? '0' : l.relative_error.toExponential(2)}</td></tr>`,
    )
    .join('\n');
  const perBits = Object.entries(s.layers_per_bit_width).map(([b, n]) => `${n}×${b}-bit`).join(', ');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ArrowQuant report: ${esc(d.model)}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<style>${CSS}</style></head>
<body>
<h1>ArrowQuant report: ${esc(d.model)}</h1>
<p class="sub">${esc(d.file)} · format v${esc(d.format_version ?? '?')} · ${s.layers} layers (${esc(perBits)})</p>
<div class="cards" id="summary">
<div class="card">bytes out<b data-value="${s.bytes_out}">${num(s.bytes_out)}</b>from ${num(s.bytes_in)} bytes in, ${s.compression_ratio}× smaller</div>
<div class="card">weighted SQNR<b data-value="${s.weighted_sqnr_db ?? ''}">${dB(s.weighted_sqnr_db)}</b>over the quantized layers</div>
<div class="card">weighted cosine<b data-value="${s.weighted_cosine ?? ''}">${s.weighted_cosine ?? '-'}</b>${s.fallback_layers} layers redone at more bits</div>
<div class="card">total error<b data-value="${d.total_error}">${num(d.total_error, 1)}</b>Σ params × ‖W−Ŵ‖²/‖W‖² (from stored SQNR)</div>
</div>
<h2>Allocation</h2>
${comparisonRows(d)}
${curve}
<h2>Layers</h2>
<p class="legend">${legend}</p>
${bitsChart}
${sqnrChart}
<table id="layers"><thead><tr><th class="n">#</th><th>name</th><th>shape</th><th class="n">bits</th><th>method</th><th class="n">group</th><th class="n">bytes out</th><th class="n">SQNR</th><th class="n">cosine</th><th class="n">rel. error</th></tr></thead>
<tbody>
${layerRows}
</tbody></table>
</body></html>
`;
}
