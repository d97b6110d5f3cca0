// npm run bench:coordinator
//
// The coordinator's ingest capacity without quantization. Shards of the 2 GB synthetic model
// (INT4 g128 RTN), made once into .bench/, are streamed by AQ_BENCH_GENERATORS (default 2) load
// generator processes through the real UploadShard path into a real `quantize --nats` job until
// its file is complete. Measured: the coordinator's own CPU seconds (user + system, from the
// first upload to its exit, resource-report.ts) per GB of shards, the wall GB/s and its peak RSS.
// Baseline in the same run: a plain Node process receiving the same bytes from the same number of
// generators over loopback TCP, SHA-256ing them and writing them once to a file (socket-sink.ts).
// Also measured: the bare ShardServer behind the smallest job (grpc-sink.ts), to show how much of
// the ratio is gRPC itself.
// Also: how many worker cores one coordinator core feeds at the measured per-core RTN and
// refine=search rates. The job runs twice: with the default reorder window (256 MB, or
// AQ_BENCH_WINDOW_MB) and with a 16 MB one, to show what peak RSS follows.
// AQ_BENCH_SMALL=1 uses the ~0.5 GB model instead. JSON on stdout.

import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir, loadavg } from 'node:os';
import { resolveConfig } from '../core/config/load.js';
import { prepareJobForPlan } from '../coordinator/job.js';
import { packageRoot } from '../core/package-info.js';
import { benchModel } from './run.js';
import { BENCH_LLAMA_SMALL, BenchProcess, CLI, benchModelOf, round, startNats } from './harness.js';
import { quantizeAll, shardSet, type ShardSet } from './shard-set.js';

const generators = Number(process.env.AQ_BENCH_GENERATORS ?? 2);
const script = (name: string) => join(packageRoot(), 'dist', 'bench', name);

/** Layer indices of generator g: every generators-th layer, as workers pulling in order would. */
const share = (set: ShardSet, g: number) => set.layers.filter((_, i) => i % generators === g).map((l) => l.index).join(',');

async function runGenerators(mode: 'grpc' | 'socket', target: string, set: ShardSet): Promise<void> {
  const manifest = join(set.dir, 'manifest.json');
  const gens = Array.from({ length: generators }, (_, g) => new BenchProcess([script('upload-load.js'), mode, target, set.job_id, manifest, share(set, g)], join(set.dir, `.gen-${g}.json`)));
  const codes = await Promise.all(gens.map((p) => p.exited));
  codes.forEach((c, g) => {
    if (c !== 0) throw new Error(`load generator ${g} (${mode}) exited ${c}:\n${gens[g]!.stderr}`);
  });
}

async function coordinatorRun(model: string, set: ShardSet, dir: string, windowMb: number): Promise<Record<string, number | string>> {
  const nats = await startNats(join(dir, `nats-${windowMb}`));
  const report = join(dir, `coordinator-${windowMb}.json`);
  try {
    const out = join(dir, 'out.arrow');
    // AQ_BENCH_PROFILE=DIR: a V8 CPU profile of the coordinator's main thread into DIR
    const profile = process.env.AQ_BENCH_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.AQ_BENCH_PROFILE}`] : [];
    // AQ_BENCH_NODE_FLAGS: extra node flags for the coordinator (e.g. V8 GC flags), space-separated
    profile.push(...(process.env.AQ_BENCH_NODE_FLAGS?.split(' ').filter(Boolean) ?? []));
    // AQ_BENCH_COORDINATOR_CLI: another build's dist/cli/main.js as the coordinator (a before/after in one run)
    const other = process.env.AQ_BENCH_COORDINATOR_CLI;
    const c = new BenchProcess([...profile, other ?? CLI(), 'quantize', model, '-o', out, '--nats', nats.url, '--listen', '127.0.0.1:0', '--json', ...(other ? [] : ['--reorder-window-mb', String(windowMb)])], report);
    await c.waitFor(/shards to (\S+)/, 120_000);
    const [, jobId, address] = /job (\S+): .*shards to (\S+)/.exec(c.stderr)!;
    if (jobId !== set.job_id) throw new Error(`the coordinator runs job ${jobId}, the shards were made for job ${set.job_id}`);
    c.mark();
    // AQ_BENCH_PERF=FILE: `perf record` of the coordinator (kernel time included) from the mark on
    if (process.env.AQ_BENCH_PERF) spawn('perf', ['record', '-q', '-g', '-p', String(c.child.pid), '-o', process.env.AQ_BENCH_PERF], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 200)); // the mark is written by a signal handler
    const t0 = performance.now();
    await runGenerators('grpc', address!, set);
    const code = await c.exited;
    const wall = (performance.now() - t0) / 1000;
    if (code !== 0) throw new Error(`coordinator exited ${code}:\n${c.stderr}`);
    const r = c.resources();
    const summary = JSON.parse(c.stdout) as { shards_written_directly?: number; shards_from_memory?: number; shards_from_stage_files?: number };
    return {
      reorder_window_mb: windowMb, cpu_s: r.cpu_s, user_s: r.user_s, system_s: r.system_s, wall_s: round(wall), peak_rss_mb: r.peak_rss_mb, output_bytes: outputBytes(out),
      shards_written_directly: summary.shards_written_directly ?? 'n/a', shards_from_memory: summary.shards_from_memory ?? 'n/a', shards_from_stage_files: summary.shards_from_stage_files ?? 'n/a',
    };
  } finally {
    await nats.stop();
  }
}

/** Write `bytes` into a scratch file and remove it: its page-cache pages are there for the next writer. */
function touchPages(file: string, bytes: number): void {
  const fd = openSync(file, 'w');
  const block = Buffer.alloc(1 << 20, 1);
  try {
    for (let done = 0; done < bytes; done += block.length) writeSync(fd, block);
  } finally {
    closeSync(fd);
    rmSync(file);
  }
}

/** The size of a run's output, which is then removed (its pages are freed for the next run). */
function outputBytes(file: string): number {
  const size = statSync(file).size;
  rmSync(file);
  return size;
}

/**
 * A sink process (`name`: socket-sink.js or grpc-sink.js) that prints "<ready> <target>" once
 * listening, fed the shards by the generators in `mode`; its own CPU from its JSON report.
 */
async function sinkRun(name: string, args: string[], ready: string, mode: 'grpc' | 'socket', set: ShardSet, dir: string): Promise<Record<string, number>> {
  const sink = new BenchProcess([script(name), ...args], join(dir, `${name}-report.json`));
  const listening = new RegExp(`${ready} (\\S+)`);
  await new Promise<void>((resolve, reject) => {
    const check = () => (listening.test(sink.stdout) ? resolve() : sink.child.exitCode !== null ? reject(new Error(sink.stderr)) : setTimeout(check, 20));
    check();
  });
  const t0 = performance.now();
  await runGenerators(mode, listening.exec(sink.stdout)![1]!, set);
  if ((await sink.exited) !== 0) throw new Error(`${name} failed:\n${sink.stderr}`);
  const wall = (performance.now() - t0) / 1000;
  const r = JSON.parse(sink.stdout.trim().split('\n').pop()!) as { user_s: number; system_s: number; peak_rss_mb: number; bytes: number };
  if (r.bytes !== set.shard_bytes) throw new Error(`${name} received ${r.bytes} bytes, expected ${set.shard_bytes}`);
  outputBytes(args[0]!);
  return { cpu_s: round(r.user_s + r.system_s), user_s: round(r.user_s), system_s: round(r.system_s), wall_s: round(wall), peak_rss_mb: r.peak_rss_mb };
}

const baselineRun = (set: ShardSet, dir: string) => sinkRun('socket-sink.js', [join(dir, 'sink.bin'), String(set.shard_bytes)], 'port', 'socket', set, dir);
/** The real ShardServer alone behind the smallest job (grpc-sink.ts): what gRPC itself costs. */
const grpcFloorRun = (set: ShardSet, dir: string) => sinkRun('grpc-sink.js', [join(dir, 'grpc-sink.bin'), join(set.dir, 'manifest.json')], 'address', 'grpc', set, dir);

async function main(): Promise<void> {
  const model = process.env.AQ_BENCH_SMALL ? await benchModelOf(BENCH_LLAMA_SMALL, 'synthetic-llama-0.5g-bf16.safetensors') : await benchModel();
  const load_before = loadavg();
  const rtnJob = prepareJobForPlan(model, resolveConfig({}));
  const set = await shardSet(rtnJob);
  // The refine=search per-core rate, from a few layers (the whole model takes minutes on one core).
  const searchJob = prepareJobForPlan(model, resolveConfig({ refine: 'search' }));
  const search = await quantizeAll(searchJob, () => '', Math.min(3, searchJob.tasks.length));
  const searchShardPerIn = search.layers.reduce((s, l) => s + l.size, 0) / search.bytesIn;

  const dir = mkdtempSync(join(tmpdir(), 'aq-bench-coord-'));
  try {
    // Every run writes the same bytes into page-cache pages that the one before freed: on a VM a
    // never-touched page costs the writer several times its copy, which would be charged to
    // whichever run came first.
    touchPages(join(dir, 'warm.bin'), set.shard_bytes);
    const coordinator = await coordinatorRun(model, set, dir, Number(process.env.AQ_BENCH_WINDOW_MB ?? 256));
    // the same job with a small window: peak RSS follows the window, not the shard sizes
    const smallWindow = process.env.AQ_BENCH_COORDINATOR_CLI ? coordinator : await coordinatorRun(model, set, dir, 16);
    const baseline = await baselineRun(set, dir);
    const grpcFloor = await grpcFloorRun(set, dir);
    const gb = set.shard_bytes / 1e9;
    const perGb = (cpu: number) => round(cpu / gb);
    const coordCpuPerGb = perGb(Number(coordinator.cpu_s));
    const baseCpuPerGb = perGb(baseline.cpu_s);
    // One coordinator core takes 1/coordCpuPerGb GB of shards per second; one worker core makes
    // (input GB/s per core) × (shard bytes per input byte).
    const rtnShardRate = set.per_core_in_gb_per_s * (set.shard_bytes / set.bytes_in);
    const searchShardRate = (search.bytesIn / 1e9 / search.elapsed) * searchShardPerIn;
    const result = {
      model, model_gb: round(statSync(model).size / 1e9), shards: set.layers.length, shard_gb: round(gb), generators,
      coordinator: { ...coordinator, cpu_s_per_gb: coordCpuPerGb, wall_gb_per_s: round(gb / Number(coordinator.wall_s)) },
      small_window: { ...smallWindow, cpu_s_per_gb: perGb(Number(smallWindow.cpu_s)) },
      largest_shard_mb: round(Math.max(...set.layers.map((l) => l.size)) / 2 ** 20, 1),
      baseline: { ...baseline, cpu_s_per_gb: baseCpuPerGb, wall_gb_per_s: round(gb / baseline.wall_s) },
      cpu_ratio: round(coordCpuPerGb / baseCpuPerGb),
      cpu_ratio_required_max: 2,
      // the bare ShardServer: how much of the ratio is gRPC (grpc-js) itself, how much the job
      grpc_floor: { ...grpcFloor, cpu_s_per_gb: perGb(grpcFloor.cpu_s), ratio_to_baseline: round(perGb(grpcFloor.cpu_s) / baseCpuPerGb), coordinator_ratio_to_it: round(coordCpuPerGb / perGb(grpcFloor.cpu_s)) },
      worker_rates_per_core: { rtn_input_gb_per_s: round(set.per_core_in_gb_per_s), search_input_gb_per_s: round(search.bytesIn / 1e9 / search.elapsed), search_measured_layers: search.layers.length },
      worker_cores_fed_per_coordinator_core: { rtn: round(1 / coordCpuPerGb / rtnShardRate, 1), search: round(1 / coordCpuPerGb / searchShardRate, 1) },
      load_average: { before: load_before.map((x) => round(x, 2)), after: loadavg().map((x) => round(x, 2)) },
    };
    process.stderr.write(
      `\n${set.layers.length} shards, ${gb.toFixed(3)} GB, ${generators} generators\n` +
        `coordinator: ${coordCpuPerGb} CPU s/GB (user ${coordinator.user_s} + sys ${coordinator.system_s} s), ${result.coordinator.wall_gb_per_s} GB/s wall, peak RSS ${coordinator.peak_rss_mb} MB; shards written directly ${coordinator.shards_written_directly}, from memory ${coordinator.shards_from_memory}, from stage files ${coordinator.shards_from_stage_files}\n` +
        `coordinator with a 16 MB window: ${result.small_window.cpu_s_per_gb} CPU s/GB, peak RSS ${smallWindow.peak_rss_mb} MB (largest shard ${result.largest_shard_mb} MB; ${smallWindow.shards_from_stage_files} shards copied from stage files)\n` +
        `baseline:    ${baseCpuPerGb} CPU s/GB (user ${baseline.user_s} + sys ${baseline.system_s} s), ${result.baseline.wall_gb_per_s} GB/s wall, peak RSS ${baseline.peak_rss_mb} MB\n` +
        `grpc floor: ${result.grpc_floor.cpu_s_per_gb} CPU s/GB (user ${grpcFloor.user_s} + sys ${grpcFloor.system_s} s): the bare ShardServer, ${result.grpc_floor.ratio_to_baseline}× the baseline; the coordinator is ${result.grpc_floor.coordinator_ratio_to_it}× it\n` +
        `ratio ${result.cpu_ratio} (required ≤ 2); one coordinator core feeds ${result.worker_cores_fed_per_coordinator_core.rtn} RTN / ${result.worker_cores_fed_per_coordinator_core.search} refine=search worker cores; load ${result.load_average.before.join(' ')} → ${result.load_average.after.join(' ')}\n`,
    );
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack}\n`);
  process.exitCode = 1;
});
