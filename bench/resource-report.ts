// Preloaded into a benchmarked process (node --import …/resource-report.js): writes the process's
// own CPU time and peak RSS to $AQ_RESOURCE_REPORT at exit, and on SIGUSR2 a snapshot that marks
// the start of the measured window (so start-up and planning can be left out).

import { appendFileSync, readFileSync } from 'node:fs';

const file = process.env.AQ_RESOURCE_REPORT;

/**
 * This process's peak RSS in MB. VmHWM belongs to the address space made by exec; getrusage's
 * maxrss (process.resourceUsage) also counts the parent's RSS at fork, so a child of a big
 * benchmark process would report the parent's size.
 */
export function peakRssMb(): number {
  const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Math.round(Number(m[1]) / 1024) : Math.round(process.resourceUsage().maxRSS / 1024);
}

function snapshot(kind: 'mark' | 'exit'): void {
  if (!file) return;
  const cpu = process.cpuUsage();
  const line = { kind, t_ms: Date.now(), user_s: cpu.user / 1e6, system_s: cpu.system / 1e6, max_rss_mb: peakRssMb() };
  appendFileSync(file, `${JSON.stringify(line)}\n`);
}

if (file) {
  process.on('SIGUSR2', () => snapshot('mark'));
  process.on('exit', () => snapshot('exit'));
}
