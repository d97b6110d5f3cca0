// npm run bench:measure
//
// allocation_strategy: measured (target 200 MB) on the ~0.5 GB synthetic model, each configuration in fresh
// processes with an empty measurement cache: the baselines, measured in the same run, are the
// local `plan --strategy measured --threads 2` (the measurement alone, which is what a coordinator
// used to do on its own threads before quantizing) and the local measured `quantize --threads 2`;
// against them a measured cluster run on 2 worker processes × 1 thread (loopback NATS + gRPC),
// whose measurement runs as measure tasks on the workers. Prints wall times and ratios, the
// coordinator's CPU until its measurement ended (its process, read at its "measurements by
// workers" line) against the local measurement's CPU, its whole run's CPU, the workers' CPU,
// how many measurements the workers did, and whether the file is the local run's byte for byte.
// AQ_BENCH_REFINE=search measures with refine: search. Table on stderr, JSON on stdout.

import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { BENCH_LLAMA_SMALL, BenchProcess, CLI, benchModelOf, round, startNats, type ResourceReport } from './harness.js';

const MEASURED = ['--mixed-precision', '--strategy', 'measured', '--target-size-mb', '200'];

interface Run {
  wall_s: number;
  cpu: ResourceReport;
  stdout: string;
  stderr: string;
}

/** `markAt`: once stderr matches it, the process's CPU so far is recorded (Run.cpu_at_mark_s). */
async function run(args: string[], report: string, markAt?: RegExp): Promise<Run & { cpu_at_mark_s?: number }> {
  const t0 = performance.now();
  const p = new BenchProcess([CLI(), ...args], report);
  if (markAt) await p.waitFor(markAt, 600_000).then(() => p.mark());
  const code = await p.exited;
  if (code !== 0) throw new Error(`${args.slice(0, 2).join(' ')} exited ${code}:\n${p.stderr}`);
  const wall_s = round((performance.now() - t0) / 1000);
  if (!markAt) return { wall_s, cpu: p.resources(), stdout: p.stdout, stderr: p.stderr };
  // the report's lines hold cumulative CPU: the mark's is what the process used until then
  const lines = readFileSync(report, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { kind: string; user_s: number; system_s: number; max_rss_mb: number });
  const mark = lines.find((l) => l.kind === 'mark');
  const exit = lines.find((l) => l.kind === 'exit');
  if (!mark || !exit) throw new Error(`${report}: no mark or exit record`);
  const cpu = { cpu_s: round(exit.user_s + exit.system_s), user_s: round(exit.user_s), system_s: round(exit.system_s), peak_rss_mb: exit.max_rss_mb };
  return { wall_s, cpu, cpu_at_mark_s: round(mark.user_s + mark.system_s), stdout: p.stdout, stderr: p.stderr };
}

async function main(): Promise<void> {
  const model = await benchModelOf(BENCH_LLAMA_SMALL, 'synthetic-llama-0.5g-bf16.safetensors');
  const refine = process.env.AQ_BENCH_REFINE === 'search' ? 'search' : 'none';
  const dir = mkdtempSync(join(tmpdir(), 'aq-bench-measure-'));
  const before = loadavg();
  const common = [...MEASURED, '--refine', refine];
  try {
    const plan = await run(['plan', model, ...common, '--threads', '2', '--cache-dir', join(dir, 'plan-cache')], join(dir, 'plan.json'));
    const localOut = join(dir, 'local.arrow');
    const local = await run(['quantize', model, '-o', localOut, '--json', ...common, '--threads', '2', '--cache-dir', join(dir, 'local-cache')], join(dir, 'local.json'));

    const nats = await startNats(dir);
    const ws = Array.from({ length: 2 }, (_, i) =>
      new BenchProcess([CLI(), 'worker', '--nats', nats.url, '--threads', '1', '--concurrency', '1', '--model-root', dirname(model), '--id', `bench-measure-${i}`], join(dir, `w${i}.json`)),
    );
    let cluster: Run & { cpu_at_mark_s?: number };
    let workers: ResourceReport[];
    const out = join(dir, 'cluster.arrow');
    try {
      await Promise.all(ws.map((w) => w.waitFor(/ready/)));
      cluster = await run(
        ['quantize', model, '-o', out, '--json', ...common, '--nats', nats.url, '--listen', '127.0.0.1:0', '--cache-dir', join(dir, 'cluster-cache')],
        join(dir, 'coordinator.json'), /measurements by workers/,
      );
      await Promise.all(ws.map((w) => (w.child.kill('SIGTERM'), w.exited)));
      workers = ws.map((w) => w.resources());
    } finally {
      for (const w of ws) if (w.child.exitCode === null) w.child.kill('SIGKILL');
      await nats.stop();
    }
    const m = /(\d+) measurements by workers \((\d+) measure tasks\).*, (\d+) from the cache, in ([\d.]+) s/.exec(cluster.stderr);
    if (!m) throw new Error(`the coordinator did not say what the workers measured:\n${cluster.stderr}`);
    const identical = readFileSync(out).equals(readFileSync(localOut));
    const result = {
      model, model_gb: round(statSync(model).size / 1e9), refine,
      local_plan_2_threads: { wall_s: plan.wall_s, cpu: plan.cpu },
      local_quantize_2_threads: { wall_s: local.wall_s, cpu: local.cpu },
      cluster_2_workers_x_1_thread: {
        wall_s: cluster.wall_s, measurement_s: Number(m[4]), measurements_by_workers: Number(m[1]), measure_tasks: Number(m[2]), from_cache: Number(m[3]),
        coordinator_cpu_whole_run_s: cluster.cpu.cpu_s, coordinator_cpu_until_measured_s: cluster.cpu_at_mark_s!, workers_cpu_s: workers.map((w) => w.cpu_s),
        wall_vs_local_quantize: round(cluster.wall_s / local.wall_s), measurement_vs_local_plan_wall: round(Number(m[4]) / plan.wall_s),
        coordinator_cpu_until_measured_vs_local_plan_cpu: round(cluster.cpu_at_mark_s! / plan.cpu.cpu_s), identical,
      },
    };
    const c = result.cluster_2_workers_x_1_thread;
    const after = loadavg();
    process.stderr.write(
      `measured allocation, ${result.model_gb} GB, refine ${refine}\n` +
        `  local plan, 2 threads (the measurement alone; baseline): ${plan.wall_s} s, CPU ${plan.cpu.cpu_s} s\n` +
        `  local quantize, 2 threads (baseline):                    ${local.wall_s} s, CPU ${local.cpu.cpu_s} s\n` +
        `  cluster, 2 workers × 1 thread:                           ${cluster.wall_s} s (${c.wall_vs_local_quantize}× local quantize); measurement ${c.measurement_s} s ` +
        `(${c.measurement_vs_local_plan_wall}× local plan), ${c.measurements_by_workers} measurements in ${c.measure_tasks} measure tasks by the workers, ${c.from_cache} from the cache\n` +
        `  coordinator CPU until measured (start, plan, hashing for the cache, waiting) ${c.coordinator_cpu_until_measured_s} s = ${c.coordinator_cpu_until_measured_vs_local_plan_cpu}× the local measurement's CPU; ` +
        `whole run ${c.coordinator_cpu_whole_run_s} s; workers CPU ${c.workers_cpu_s.join(' + ')} s; identical ${identical}\n` +
        `load average ${before.map((x) => x.toFixed(2)).join(' ')} → ${after.map((x) => x.toFixed(2)).join(' ')}\n`,
    );
    process.stdout.write(`${JSON.stringify({ ...result, load_average: { before, after } }, null, 2)}\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack}\n`);
  process.exitCode = 1;
});
