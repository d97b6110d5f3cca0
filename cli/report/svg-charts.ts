// Inline SVG charts for the report: no scripts, no fonts or styles from outside. Every mark
// carries its number in a data- attribute, so a test (or a reader's tool) can check the chart
// against the file.

export const escapeXml = (s: string): string => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const W = 1120;
const H = 300;
const PAD = { left: 64, right: 16, top: 28, bottom: 44 };
const plotW = W - PAD.left - PAD.right;
const plotH = H - PAD.top - PAD.bottom;

export interface Bar {
  label: string;
  value: number;
  color: string;
}

function frame(id: string, title: string, body: string[]): string {
  return [
    `<svg id="${id}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="100%" role="img" aria-label="${escapeXml(title)}">`,
    `<text x="${PAD.left}" y="18" class="title">${escapeXml(title)}</text>`,
    ...body,
    '</svg>',
  ].join('\n');
}

const fmt = (x: number) => (Math.abs(x) >= 1000 ? x.toFixed(0) : Number(x.toPrecision(4)).toString());

/** Vertical bars, one per entry in order, on a linear axis from 0 to yMax with the given ticks. */
export function barChart(id: string, title: string, yLabel: string, bars: Bar[], yMax: number, ticks: number[]): string {
  const body: string[] = [];
  const y = (v: number) => PAD.top + plotH - (Math.max(0, Math.min(v, yMax)) / yMax) * plotH;
  for (const t of ticks) {
    body.push(`<line x1="${PAD.left}" x2="${W - PAD.right}" y1="${y(t).toFixed(1)}" y2="${y(t).toFixed(1)}" class="grid"/>`);
    body.push(`<text x="${PAD.left - 6}" y="${(y(t) + 4).toFixed(1)}" text-anchor="end" class="tick">${fmt(t)}</text>`);
  }
  const step = plotW / Math.max(1, bars.length);
  bars.forEach((b, i) => {
    const x = PAD.left + i * step;
    const top = y(b.value);
    body.push(
      `<rect class="bar" x="${(x + step * 0.1).toFixed(1)}" y="${top.toFixed(1)}" width="${(step * 0.8).toFixed(1)}" height="${(PAD.top + plotH - top).toFixed(1)}" fill="${b.color}" data-label="${escapeXml(b.label)}" data-value="${b.value}"><title>${escapeXml(b.label)}: ${fmt(b.value)}</title></rect>`,
    );
  });
  body.push(`<text x="14" y="${PAD.top + plotH / 2}" transform="rotate(-90 14 ${PAD.top + plotH / 2})" text-anchor="middle" class="axis">${escapeXml(yLabel)}</text>`);
  body.push(`<text x="${PAD.left + plotW / 2}" y="${H - 12}" text-anchor="middle" class="axis">layer, in file order (depth →)</text>`);
  return frame(id, title, body);
}

export interface Point {
  x: number;
  y: number;
  label: string;
  kind: string;
}

/** The curve (points joined by a line) and marked points, on linear x and log10 y. */
export function curveChart(id: string, title: string, xLabel: string, yLabel: string, curve: Point[], marks: Point[]): string {
  const all = [...curve, ...marks];
  const xs = all.map((p) => p.x);
  const ys = all.map((p) => Math.max(p.y, 1e-12));
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [ly0, ly1] = [Math.floor(Math.log10(Math.min(...ys))), Math.ceil(Math.log10(Math.max(...ys)))];
  const span = Math.max(1, ly1 - ly0);
  const px = (x: number) => PAD.left + (x1 > x0 ? ((x - x0) / (x1 - x0)) * plotW : plotW / 2);
  const py = (v: number) => PAD.top + plotH - ((Math.log10(Math.max(v, 1e-12)) - ly0) / span) * plotH;
  const body: string[] = [];
  for (let e = ly0; e <= ly0 + span; e++) {
    body.push(`<line x1="${PAD.left}" x2="${W - PAD.right}" y1="${py(10 ** e).toFixed(1)}" y2="${py(10 ** e).toFixed(1)}" class="grid"/>`);
    body.push(`<text x="${PAD.left - 6}" y="${(py(10 ** e) + 4).toFixed(1)}" text-anchor="end" class="tick">1e${e}</text>`);
  }
  for (let k = 0; k <= 4; k++) {
    const x = x0 + ((x1 - x0) * k) / 4;
    body.push(`<text x="${px(x).toFixed(1)}" y="${PAD.top + plotH + 16}" text-anchor="${k === 0 ? 'start' : k === 4 ? 'end' : 'middle'}" class="tick">${fmt(x)}</text>`);
  }
  if (curve.length) body.push(`<polyline class="curve" fill="none" points="${curve.map((p) => `${px(p.x).toFixed(1)},${py(p.y).toFixed(1)}`).join(' ')}"/>`);
  for (const p of all) {
    body.push(
      `<circle class="point ${escapeXml(p.kind)}" cx="${px(p.x).toFixed(1)}" cy="${py(p.y).toFixed(1)}" r="${p.kind === 'curve' ? 3 : 6}" data-kind="${escapeXml(p.kind)}" data-bytes="${p.x}" data-error="${p.y}"><title>${escapeXml(p.label)}: ${fmt(p.x)} bytes, error ${fmt(p.y)}</title></circle>`,
    );
  }
  marks.forEach((p, i) => {
    // labels near the right edge go to the left of their point, so they are not cut off
    const left = px(p.x) > W - 200;
    body.push(`<text x="${(px(p.x) + (left ? -9 : 9)).toFixed(1)}" y="${(py(p.y) - 8 - 12 * (i % 2)).toFixed(1)}" text-anchor="${left ? 'end' : 'start'}" class="mark">${escapeXml(p.label)}</text>`);
  });
  body.push(`<text x="14" y="${PAD.top + plotH / 2}" transform="rotate(-90 14 ${PAD.top + plotH / 2})" text-anchor="middle" class="axis">${escapeXml(yLabel)}</text>`);
  body.push(`<text x="${PAD.left + plotW / 2}" y="${H - 12}" text-anchor="middle" class="axis">${escapeXml(xLabel)}</text>`);
  return frame(id, title, body);
}
