// Preloaded into a benchmarked process (node --import …/resource-report.js): writes the process's
// own CPU time and peak RSS to $AQ_RESOURCE_REPORT at exit, and on SIGUSR2 a snapshot that marks
// the start of the measured window (so start-up and planning can be left out).

import { appendFileSync } from 'node:fs';

const file = process.env.AQ_RESOURCE_REPORT;

function snapshot(kind: 'mark' | 'exit'): void {
  if (!file) return;
  const cpu = process.cpuUsage();
  const line = { kind, t_ms: Date.now(), user_s: cpu.user / 1e6, system_s: cpu.system / 1e6, max_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024) };
  appendFileSync(file, `${JSON.stringify(line)}\n`);
}

if (file) {
  process.on('SIGUSR2', () => snapshot('mark'));
  process.on('exit', () => snapshot('exit'));
}
