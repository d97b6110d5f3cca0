// npm run bench:cluster
//
// Local runs against cluster runs on this machine, each configuration in fresh processes:
// INT4 g128 RTN on the ~2 GB synthetic model and refine=search on the ~0.5 GB one; for each, the
// local run with 2 threads (the baseline, measured in the same run) against 2 worker processes
// × 1 thread and 1 worker × 2 threads, coordinated over loopback NATS JetStream + gRPC. Prints the
// throughput ratios, the coordinator's CPU (user + system of its whole process) against the local
// run's total CPU, the workers' CPU, peak RSS and whether every output is byte-identical to the
// local one; also against the local run writing through the page cache (ARROW_QUANT_DIRECT_IO=0),
// as it did when the cluster targets were set. Each configuration runs AQ_BENCH_REPS times
// (default 3) and the run of median time stands for it. AQ_BENCH_SMALL=1 runs RTN on the small
// model too (a quick check); AQ_BENCH_CLI runs another build. Table on stderr, JSON on stdout.
// Needs `nats-server` on the PATH.

import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { benchModel } from './run.js';
import { BENCH_LLAMA_SMALL, BenchProcess, CLI, benchModelOf, round, startNats, warmFile, type ResourceReport } from './harness.js';

interface Run {
  elapsed_s: number;
  input_gb_per_s: number;
  cpu: ResourceReport;
  summary: Record<string, unknown>;
}

async function quantize(model: string, out: string, args: string[], report: string, env: NodeJS.ProcessEnv = {}): Promise<Run> {
  warmFile(model); // every run, local or cluster, starts with the model in the page cache
  const p = new BenchProcess([CLI(), 'quantize', model, '-o', out, '--json', ...args], report, env);
  const code = await p.exited;
  if (code !== 0) throw new Error(`quantize ${args.join(' ')} exited ${code}:\n${p.stderr}`);
  const summary = JSON.parse(p.stdout) as { elapsed_s: number; input_gb_per_s: number };
  return { elapsed_s: summary.elapsed_s, input_gb_per_s: summary.input_gb_per_s, cpu: p.resources(), summary };
}

async function clusterRun(model: string, dir: string, tag: string, workers: number, threads: number, refine: string) {
  const nats = await startNats(join(dir, tag));
  const ws = Array.from({ length: workers }, (_, i) =>
    new BenchProcess([CLI(), 'worker', '--nats', nats.url, '--threads', String(threads), '--concurrency', '1', '--model-root', dirname(model), '--id', `bench-${tag}-${i}`], join(dir, `${tag}-w${i}.json`)),
  );
  try {
    await Promise.all(ws.map((w) => w.waitFor(/ready/)));
    const out = join(dir, `${tag}.arrow`);
    const run = await quantize(model, out, ['--nats', nats.url, '--listen', '127.0.0.1:0', '--refine', refine], join(dir, `${tag}-coordinator.json`));
    await Promise.all(ws.map((w) => (w.child.kill('SIGTERM'), w.exited)));
    const workerCpu = ws.map((w) => w.resources());
    return { ...run, out, workers: workerCpu };
  } finally {
    for (const w of ws) if (w.child.exitCode === null) w.child.kill('SIGKILL');
    await nats.stop();
  }
}

/** Runs of each configuration (AQ_BENCH_REPS, default 3): one run varies by up to 1.5× on this machine. */
const REPS = Math.max(1, Number(process.env.AQ_BENCH_REPS ?? 3) || 3);

/** `REPS` runs of `one`; the run of median elapsed time stands for them (its other figures go with it). */
async function medianRun<T extends { elapsed_s: number }>(one: (rep: number) => Promise<T>): Promise<T & { elapsed_s_runs: number[] }> {
  const runs: T[] = [];
  for (let rep = 0; rep < REPS; rep++) runs.push(await one(rep));
  const sorted = [...runs].sort((a, b) => a.elapsed_s - b.elapsed_s);
  return { ...sorted[(sorted.length - 1) >> 1]!, elapsed_s_runs: runs.map((r) => r.elapsed_s) };
}

async function job(name: string, model: string, refine: string, dir: string) {
  const localOut = join(dir, `${name}-local.arrow`);
  let localBytes: Buffer | null = null;
  const local = await medianRun(async (rep) => {
    const r = await quantize(model, localOut, ['--threads', '2', '--refine', refine], join(dir, `${name}-local-${rep}.json`));
    const bytes = readFileSync(localOut);
    if (localBytes && !bytes.equals(localBytes)) throw new Error(`${name}: local run ${rep} wrote other bytes than run 0`);
    localBytes ??= bytes;
    rmSync(localOut, { force: true });
    return r;
  });
  const expected = localBytes!;
  // For comparison with the figures of the issue: the local run as it was then, its output written
  // through the page cache (ARROW_QUANT_DIRECT_IO=0); the required ratios are against the local run above.
  const pageCacheOut = join(dir, `${name}-local-page-cache.arrow`);
  const pageCache = await medianRun(async (rep) => {
    const r = await quantize(model, pageCacheOut, ['--threads', '2', '--refine', refine], join(dir, `${name}-local-page-cache-${rep}.json`), { ARROW_QUANT_DIRECT_IO: '0' });
    if (!readFileSync(pageCacheOut).equals(expected)) throw new Error(`${name}: the local run through the page cache wrote other bytes than with O_DIRECT`);
    rmSync(pageCacheOut, { force: true });
    return r;
  });
  const rows = [];
  for (const [workers, threads] of [[2, 1], [1, 2]] as const) {
    let identical = true;
    const c = await medianRun(async (rep) => {
      const r = await clusterRun(model, dir, `${name}-${workers}x${threads}-${rep}`, workers, threads, refine);
      identical &&= readFileSync(r.out).equals(expected);
      rmSync(r.out, { force: true });
      return r;
    });
    rows.push({
      cluster: `${workers} workers × ${threads} thread${threads > 1 ? 's' : ''}`,
      elapsed_s: c.elapsed_s, elapsed_s_runs: c.elapsed_s_runs, input_gb_per_s: c.input_gb_per_s, ratio_vs_local: round(c.input_gb_per_s / local.input_gb_per_s),
      coordinator_cpu: c.cpu, coordinator_cpu_vs_local_total_cpu: round(c.cpu.cpu_s / local.cpu.cpu_s),
      ratio_vs_local_page_cache: round(c.input_gb_per_s / pageCache.input_gb_per_s), coordinator_cpu_vs_local_page_cache_cpu: round(c.cpu.cpu_s / pageCache.cpu.cpu_s),
      workers_cpu_s: c.workers.map((w) => w.cpu_s), workers_peak_rss_mb: c.workers.map((w) => w.peak_rss_mb),
      grpc_bytes_received: c.summary.grpc_bytes_received, shards_written_directly: c.summary.shards_written_directly, shards_from_memory: c.summary.shards_from_memory, shards_from_stage_files: c.summary.shards_from_stage_files, identical,
    });
  }
  return {
    job: name, model, model_gb: round(statSync(model).size / 1e9), refine,
    reps: REPS,
    local: { elapsed_s: local.elapsed_s, elapsed_s_runs: local.elapsed_s_runs, input_gb_per_s: local.input_gb_per_s, cpu: local.cpu },
    local_page_cache: { elapsed_s: pageCache.elapsed_s, elapsed_s_runs: pageCache.elapsed_s_runs, input_gb_per_s: pageCache.input_gb_per_s, cpu: pageCache.cpu },
    clusters: rows,
  };
}

async function main(): Promise<void> {
  const small = await benchModelOf(BENCH_LLAMA_SMALL, 'synthetic-llama-0.5g-bf16.safetensors');
  const big = process.env.AQ_BENCH_SMALL ? small : await benchModel();
  const dir = mkdtempSync(join(tmpdir(), 'aq-bench-cluster-'));
  const before = loadavg();
  try {
    const jobs = [await job('rtn', big, 'none', dir), await job('search', small, 'search', dir)];
    const required = { rtn: 0.6, search: 0.85 };
    for (const j of jobs) {
      process.stderr.write(`\n${j.job} (${j.model_gb} GB${j.refine === 'search' ? ', refine=search' : ', RTN'}; the median of ${j.reps} runs each, all runs' seconds in brackets): local 2 threads ${j.local.input_gb_per_s} GB/s (${j.local.elapsed_s} s [${j.local.elapsed_s_runs.join(', ')}], CPU ${j.local.cpu.cpu_s} s)\n`);
      process.stderr.write(`  (the local run writing through the page cache, as when the issue was filed: ${j.local_page_cache.input_gb_per_s} GB/s, ${j.local_page_cache.elapsed_s} s, CPU ${j.local_page_cache.cpu.cpu_s} s)\n`);
      for (const r of j.clusters) {
        process.stderr.write(
          `  ${r.cluster.padEnd(22)} ${r.input_gb_per_s} GB/s (${r.elapsed_s} s [${r.elapsed_s_runs.join(', ')}]) ratio ${r.ratio_vs_local}${r.cluster.startsWith('2') ? ` (required ≥ ${required[j.job as 'rtn' | 'search']})` : ''}; coordinator CPU ${r.coordinator_cpu.cpu_s} s = ${r.coordinator_cpu_vs_local_total_cpu}× local (required ≤ 0.5); workers CPU ${r.workers_cpu_s.join(' + ')} s; identical ${r.identical}\n` +
            `  ${''.padEnd(22)} vs the page-cache local: ratio ${r.ratio_vs_local_page_cache}, coordinator CPU ${r.coordinator_cpu_vs_local_page_cache_cpu}×\n`,
        );
      }
    }
    const after = loadavg();
    process.stderr.write(`load average ${before.map((x) => x.toFixed(2)).join(' ')} → ${after.map((x) => x.toFixed(2)).join(' ')}\n`);
    process.stdout.write(`${JSON.stringify({ jobs, load_average: { before, after } }, null, 2)}\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack}\n`);
  process.exitCode = 1;
});
