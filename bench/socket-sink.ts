// The floor of bench:coordinator (a child process): receives shards as plain frames
// ([u32 layer][u64 size][bytes]) over loopback TCP, SHA-256s each while it streams in and writes
// every byte once into one file (each frame at the next free offset), fsyncs, and prints its own
// CPU time from the first byte to the end as JSON. argv: output-file total-bytes

import { createHash, type Hash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { createServer } from 'node:net';
import { peakRssMb } from './resource-report.js';

async function main(): Promise<void> {
  const [file, totalArg] = process.argv.slice(2) as [string, string];
  const total = Number(totalArg);
  const fh = await open(file, 'w');
  let nextOffset = 0;
  let received = 0;
  let cpu0: NodeJS.CpuUsage | null = null;
  let t0 = 0;
  const hashes: string[] = [];
  let finish!: () => void;
  const done = new Promise<void>((r) => (finish = r));
  const server = createServer((socket) => {
    cpu0 ??= process.cpuUsage();
    t0 ||= performance.now();
    let head = Buffer.alloc(0);
    let left = 0;
    let pos = 0;
    let hash: Hash | null = null;
    let writing = Promise.resolve();
    socket.on('data', (data: Buffer) => {
      let buf = data;
      while (buf.byteLength > 0) {
        if (left === 0) {
          const take = buf.subarray(0, 12 - head.byteLength);
          head = Buffer.concat([head, take]);
          buf = buf.subarray(take.byteLength);
          if (head.byteLength < 12) return;
          left = Number(head.readBigUInt64LE(4));
          head = Buffer.alloc(0);
          pos = nextOffset;
          nextOffset += left;
          hash = createHash('sha256');
          continue;
        }
        const part = buf.subarray(0, Math.min(left, buf.byteLength));
        buf = buf.subarray(part.byteLength);
        hash!.update(part);
        const at = pos;
        pos += part.byteLength;
        left -= part.byteLength;
        received += part.byteLength;
        if (left === 0) hashes.push(hash!.digest('hex'));
        // Backpressure as a receiver applies it: no more reads until this write is done.
        socket.pause();
        writing = writing.then(() => fh.write(part, 0, part.byteLength, at)).then(() => {
          socket.resume();
          if (received === total) finish();
        });
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  process.stdout.write(`port ${(server.address() as { port: number }).port}\n`);
  await done;
  await fh.sync();
  await fh.close();
  const cpu = process.cpuUsage(cpu0!);
  const elapsed = (performance.now() - t0) / 1000;
  server.close();
  process.stdout.write(`${JSON.stringify({ bytes: received, shards: hashes.length, user_s: cpu.user / 1e6, system_s: cpu.system / 1e6, elapsed_s: elapsed, peak_rss_mb: peakRssMb() })}\n`);
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack}\n`);
  process.exitCode = 1;
});
