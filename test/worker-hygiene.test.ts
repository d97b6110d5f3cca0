// Hygiene of long-lived cluster processes (issue 10): a worker does not keep a gRPC channel per
// job it ever served, the task stream and job state have limits, and the worker's health follows
// its NATS connection both ways. Real nats-server and worker process.
import { createServer, type AddressInfo } from 'node:net';
import { describe, expect, test } from 'vitest';
import { connect, nanos } from 'nats';
import { credentials } from '@grpc/grpc-js';
import { ShardClient } from '../worker/cluster/shard-client.js';
import { ShardClients } from '../worker/cluster/shard-clients.js';
import { ensureTaskQueue, jobsBucket, workersBucket } from '../core/cluster/jetstream-setup.js';
import { JOBS_BUCKET, TASK_STREAM, WORKERS_BUCKET } from '../core/cluster/names.js';
import { grpcServices, type HealthCheckResponse } from '../core/grpc/proto.js';
import { clusterFixture } from './helpers/cluster-fixture.js';
import { FIXTURE_MODELS } from './helpers/cli.js';

const cluster = clusterFixture('aq-worker-hygiene-');

describe('worker hygiene', () => {
  test('worker hygiene - gRPC channels: idle ones beyond the cap and any idle too long are closed, one in use never', async () => {
    let now = 0;
    const closed: string[] = [];
    const clients = new ShardClients(
      (address) => {
        const c = new ShardClient(address, null);
        const close = c.close.bind(c);
        c.close = () => (closed.push(address), close());
        return c;
      },
      { idleMs: 60_000, maxIdle: 2 },
      () => now,
    );
    const addr = (i: number) => `127.0.0.1:${10_000 + i}`;
    // a channel in use through many other jobs' channels is kept; the least recently used idle ones go
    let first!: ShardClient;
    await clients.use(addr(0), async (c0) => {
      first = c0;
      for (let i = 1; i <= 5; i++) await clients.use(addr(i), async () => undefined);
      expect(closed).toEqual([addr(1), addr(2), addr(3)]);
      expect(clients.size).toBe(3); // 0 (in use), 4 and 5
    });
    expect(closed).toEqual([addr(1), addr(2), addr(3), addr(4)]);
    // the same address gets the same channel while it is open
    await clients.use(addr(0), async (c) => expect(c).toBe(first));
    // idle past idleMs: closed at the next use of any channel
    now += 60_000;
    await clients.use(addr(6), async () => undefined);
    expect(closed).toEqual([addr(1), addr(2), addr(3), addr(4), addr(5), addr(0)]);
    expect(clients.size).toBe(1);
    clients.closeAll();
    expect(clients.size).toBe(0);
    expect(closed.at(-1)).toBe(addr(6));
  });

  test('worker hygiene - connect() opens the channel before its first call, which then uses the same channel', async () => {
    const server = createServer((socket) => socket.destroy());
    const connected = new Promise<void>((resolve) => server.once('connection', () => resolve()));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    const clients = new ShardClients((a) => new ShardClient(a, null));
    try {
      clients.connect(address);
      expect(clients.size).toBe(1);
      await connected; // the TCP connection was made with no call
      let viaConnect!: ShardClient;
      clients.connect(address); // again: the same channel
      expect(clients.size).toBe(1);
      await clients.use(address, async (c) => (viaConnect = c));
      await clients.use(address, async (c) => expect(c).toBe(viaConnect));
    } finally {
      clients.closeAll();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  test('worker hygiene - the task stream and the job state have limits (task age and size, job-state TTL, heartbeat TTL); an older stream without them gets them', async () => {
    const nc = await connect({ servers: cluster.nats.url });
    try {
      await ensureTaskQueue(nc);
      await jobsBucket(nc);
      await workersBucket(nc);
      const jsm = await nc.jetstreamManager();
      const tasks = (await jsm.streams.info(TASK_STREAM)).config;
      const week = nanos(7 * 24 * 3600_000);
      expect({ max_age: tasks.max_age, max_msg_size: tasks.max_msg_size, duplicate_window: tasks.duplicate_window }).toEqual({
        max_age: week, max_msg_size: 1024 * 1024, duplicate_window: nanos(10 * 60_000),
      });
      expect((await jsm.streams.info(`KV_${JOBS_BUCKET}`)).config.max_age).toBe(week);
      expect((await jsm.streams.info(`KV_${WORKERS_BUCKET}`)).config.max_age).toBe(nanos(15_000));
      // a stream made without limits (an older version) gets them from the next coordinator
      await jsm.streams.update(TASK_STREAM, { ...tasks, max_age: 0, max_msg_size: -1 });
      expect((await jsm.streams.info(TASK_STREAM)).config.max_age).toBe(0);
      await ensureTaskQueue(nc);
      const upgraded = (await jsm.streams.info(TASK_STREAM)).config;
      expect({ max_age: upgraded.max_age, max_msg_size: upgraded.max_msg_size }).toEqual({ max_age: week, max_msg_size: 1024 * 1024 });
    } finally {
      await nc.close();
    }
  });

  test('worker hygiene - health follows the NATS connection: NOT_SERVING while it is down, SERVING once it is back', async () => {
    const w = cluster.start(['worker', '--nats', cluster.nats.url, '--threads', '1', '--model-root', FIXTURE_MODELS, '--grace', '1', '--health-listen', '127.0.0.1:0']);
    await w.waitFor(/ready/);
    const at = /health service on (\S+)/.exec((await w.waitFor(/health service on \S+/))[0]!)![1]!;
    const raw = new (grpcServices().health.Client)(at, credentials.createInsecure());
    const watch = raw.Watch({ service: '' });
    watch.on('error', () => undefined);
    const seen: string[] = [];
    const backAgain = new Promise<void>((resolve) => {
      watch.on('data', (r: HealthCheckResponse) => {
        seen.push(r.status);
        if (seen.length === 1) void cluster.nats.restart();
        if (seen.length > 2 && r.status === 'SERVING') resolve();
      });
    });
    try {
      await backAgain;
      await w.waitFor(/NATS reconnect/);
      expect(seen).toEqual(['SERVING', 'NOT_SERVING', 'SERVING']);
      const probe = new ShardClient(at, null);
      expect(await probe.health()).toBe('SERVING');
      probe.close();
    } finally {
      watch.cancel();
      raw.close();
    }
  }, 60_000);
});
