// npm run bench:cluster
//
// The same synthetic ~2 GB BF16 model, on this machine: the local run with 2 threads (the
// baseline, measured in the same run) against 2 worker processes (1 thread each) coordinated
// over loopback NATS JetStream + gRPC. Prints both throughputs and their ratio, the bytes that
// crossed gRPC, and the peak RSS of the coordinator and of each worker. Table on stderr, JSON on
// stdout. Needs `nats-server` on the PATH.

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createServer } from 'node:net';
import { packageRoot } from '../core/package-info.js';
import { benchModel, runQuantize } from './run.js';

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

async function main(): Promise<void> {
  const model = await benchModel();
  const sizeGb = statSync(model).size / 1e9;
  const dir = mkdtempSync(join(tmpdir(), 'aq-bench-cluster-'));
  const cli = join(packageRoot(), 'dist', 'cli', 'main.js');
  const port = await freePort();
  const nats = spawn('nats-server', ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', join(dir, 'js')], { stdio: 'ignore' });
  const url = `nats://127.0.0.1:${port}`;
  const workers: ReturnType<typeof spawn>[] = [];
  try {
    await new Promise((r) => setTimeout(r, 500));
    const local = runQuantize(model, join(dir, 'local.arrow'), ['--threads', '2']);
    const workerStats: { id: string; rss_mb: number; layers: number }[] = [];
    for (let i = 0; i < 2; i++) {
      const w = spawn(process.execPath, [cli, 'worker', '--nats', url, '--threads', '1', '--concurrency', '1', '--model-root', dirname(model), '--id', `bench-${i}`], {
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let err = '';
      w.stderr!.on('data', (d) => (err += d));
      await new Promise<void>((resolve) => {
        const check = () => (/ready/.test(err) ? resolve() : setTimeout(check, 50));
        check();
      });
      w.on('exit', () => {
        const m = /stopped after (\d+) layers; peak RSS (\d+) MB/.exec(err);
        workerStats.push({ id: `bench-${i}`, layers: Number(m?.[1] ?? 0), rss_mb: Number(m?.[2] ?? 0) });
      });
      workers.push(w);
    }
    const cluster = runQuantize(model, join(dir, 'cluster.arrow'), ['--nats', url, '--listen', '127.0.0.1:0']);
    const identical = readFileSync(join(dir, 'local.arrow')).equals(readFileSync(join(dir, 'cluster.arrow')));
    await Promise.all(workers.map((w) => new Promise((r) => (w.once('exit', r), w.kill('SIGTERM')))));
    const ratio = cluster.input_gb_per_s / local.input_gb_per_s;
    process.stderr.write(`\nmodel ${model}: ${sizeGb.toFixed(2)} GB BF16, INT4 g128\n`);
    process.stderr.write(`local, 2 threads:            ${local.input_gb_per_s.toFixed(3)} GB/s  (${local.elapsed_s.toFixed(2)} s, peak RSS ${local.peak_rss_mb} MB)\n`);
    process.stderr.write(`cluster, 2 workers × 1 thread: ${cluster.input_gb_per_s.toFixed(3)} GB/s  (${cluster.elapsed_s.toFixed(2)} s, coordinator peak RSS ${cluster.peak_rss_mb} MB)\n`);
    process.stderr.write(`ratio cluster/local: ${ratio.toFixed(3)} (required ≥ 0.6); output identical: ${identical}\n`);
    process.stderr.write(`bytes over gRPC: ${cluster.grpc_bytes_received} (${(Number(cluster.grpc_bytes_received) / 1e6).toFixed(1)} MB; output ${(local.bytes_out / 1e6).toFixed(1)} MB of bytes_out)\n`);
    for (const w of workerStats) process.stderr.write(`worker ${w.id}: ${w.layers} layers, peak RSS ${w.rss_mb} MB\n`);
    process.stdout.write(JSON.stringify({ model, model_gb: sizeGb, local, cluster, ratio, identical, workers: workerStats }, null, 2) + '\n');
  } finally {
    for (const w of workers) w.kill('SIGKILL');
    nats.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack}\n`);
  process.exitCode = 1;
});
