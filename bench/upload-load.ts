// A load generator of bench:coordinator (a child process): streams its share of the pre-made
// shards, one at a time, either through the real UploadShard path (`grpc ADDRESS JOB`) or as plain
// frames over a loopback TCP socket to socket-sink.ts (`socket PORT`).
// argv: mode target job manifest indices(comma-separated)

import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { ShardClient } from '../worker/cluster/shard-client.js';
import type { ShardSet } from './shard-set.js';

const CHUNK = 1 << 20;

async function main(): Promise<void> {
  const [mode, target, jobId, manifestFile, list] = process.argv.slice(2) as [string, string, string, string, string];
  const set = JSON.parse(readFileSync(manifestFile, 'utf8')) as ShardSet;
  const indices = list.split(',').map(Number);
  const layers = indices.map((i) => set.layers.find((l) => l.index === i)!);
  if (mode === 'grpc') {
    const client = new ShardClient(target, null);
    try {
      for (const l of layers) {
        const bytes = readFileSync(l.file);
        await client.upload({ job_id: jobId, layer_index: l.index, plan_hash: l.plan_hash, worker_id: `load-${process.pid}` }, [bytes]);
      }
    } finally {
      client.close();
    }
  } else {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect(Number(target), '127.0.0.1', () => resolve(s));
      s.once('error', reject);
    });
    for (const l of layers) {
      const bytes = readFileSync(l.file);
      const head = Buffer.alloc(12);
      head.writeUInt32LE(l.index, 0);
      head.writeBigUInt64LE(BigInt(bytes.byteLength), 4);
      await send(socket, head);
      for (let off = 0; off < bytes.byteLength; off += CHUNK) await send(socket, bytes.subarray(off, Math.min(bytes.byteLength, off + CHUNK)));
    }
    await new Promise<void>((resolve) => socket.end(resolve));
  }
}

function send(s: Socket, b: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    if (s.write(b)) resolve();
    else {
      s.once('drain', resolve);
      s.once('error', reject);
    }
  });
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack}\n`);
  process.exitCode = 1;
});
