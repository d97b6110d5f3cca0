// Plain-text tables for stderr.

export function formatTable(headers: string[], rows: (string | number)[][], rightAlign: Set<number> = new Set()): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  // a reduce, not Math.max(...spread): a model may have more tensors than the stack has room for arguments
  const widths = headers.map((_, c) => cells.reduce((w, r) => Math.max(w, (r[c] ?? '').length), 0));
  const line = (r: string[]) =>
    r.map((cell, c) => (rightAlign.has(c) ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!))).join('  ').trimEnd();
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}

export function formatBytes(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} B`;
}
