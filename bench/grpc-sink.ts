// A second floor of bench:coordinator (a child process): the real ShardServer alone, with the
// smallest job behind it — every upload waits for its turn and is written straight into one file
// as it arrives, SHA-256 checked once, no plan check, no NATS, no job state. What separates it from
// socket-sink.ts is the cost of gRPC (core/grpc/h2-server.ts over node:http2) itself; what separates the
// coordinator from it is the job. Prints "address A" once listening, then its CPU time from the
// first upload to the end as JSON. argv: output-file manifest

import { readFileSync } from 'node:fs';
import { open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { ShardServer } from '../coordinator/cluster/shard-server.js';
import { ReorderWindow } from '../coordinator/cluster/reorder-window.js';
import { decodeShard } from '../core/format/arrow-file.js';
import { peakRssMb } from './resource-report.js';
import type { ShardSet } from './shard-set.js';

async function main(): Promise<void> {
  const [file, manifestFile] = process.argv.slice(2) as [string, string];
  const set = JSON.parse(readFileSync(manifestFile, 'utf8')) as ShardSet;
  const layers = new Map(set.layers.map((l) => [l.index, { ...l, name: decodeShard(readFileSync(l.file)).record.layer_name }]));
  const fh = await open(file, 'w');
  const stageDir = join(tmpdir(), `aq-grpc-sink-${process.pid}`); // never written (every shard is direct), but made per upload
  const server = new ShardServer({ orderWaitMs: 600_000, orderGapMs: 600_000 }); // strictly in order: every shard direct
  const window = new ReorderWindow(256 << 20);
  let next = 0;
  let offset = 0;
  let staged = 0;
  let bytes = 0;
  let cpu0: NodeJS.CpuUsage | null = null;
  let t0 = 0;
  let finish!: () => void;
  const done = new Promise<void>((r) => (finish = r));
  server.registerJob(set.job_id, {
    stageDir,
    layer: (i) => {
      cpu0 ??= process.cpuUsage();
      t0 ||= performance.now();
      const l = layers.get(i);
      return l && { planHash: l.plan_hash, name: l.name, file: '', dataStart: 0, byteLength: 0, maxShardBytes: l.size, check: () => undefined };
    },
    // reused buffers, as the coordinator's reorder window gives them (a fresh one per shard costs page faults and GC)
    reserveMemory: (bytes) => window.tryReserve(bytes),
    releaseMemory: (buffer) => window.release(buffer),
    recordedHash: () => undefined,
    nextLayer: () => next,
    directWriter: (i) => (i === next ? { write: (pieces, at) => fh.writev(pieces as Uint8Array[], offset + at).then(() => undefined) } : null),
    onStaged: (_i, shard) => {
      if (shard.path !== null) throw new Error('the grpc sink writes every shard directly (an upload arrived out of order)');
      offset += shard.frame.metaDataLength + shard.frame.bodyLength;
      next++;
      bytes += shard.size;
      if (++staged === layers.size) finish();
    },
  });
  const { address } = await server.start('127.0.0.1:0');
  process.stdout.write(`address ${address}\n`);
  await done;
  await fh.sync();
  await fh.close();
  const cpu = process.cpuUsage(cpu0!);
  const elapsed = (performance.now() - t0) / 1000;
  await server.stop();
  await rm(stageDir, { recursive: true, force: true });
  process.stdout.write(`${JSON.stringify({ bytes, shards: staged, user_s: cpu.user / 1e6, system_s: cpu.system / 1e6, elapsed_s: elapsed, peak_rss_mb: peakRssMb() })}\n`);
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack}\n`);
  process.exitCode = 1;
});
