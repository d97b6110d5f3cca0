// A full disk in cluster mode (ENOSPC injected by a preload, on any file system): the
// coordinator's own disk fails the job at once naming the path and the cause, with nothing
// half-written left; a worker's full work dir is retried elsewhere and, once the deliveries are
// exhausted, the job's error names the last failure rather than only "failed N deliveries" (and a
// rerun publishes the exhausted layer again).
import { existsSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import type { Proc } from './helpers/processes.js';
import { clusterFixture } from './helpers/cluster-fixture.js';
import { connect } from 'nats';
import { TASK_STREAM, WORKER_CONSUMER } from '../core/cluster/names.js';
import { FIXTURE_MODELS, ROOT, runCli } from './helpers/cli.js';

const cluster = clusterFixture('aq-cluster-enospc-');
const { dir } = cluster;
const ENV = { ARROW_QUANT_TASK_ACK_WAIT_MS: '2000', ARROW_QUANT_TASK_MAX_DELIVER: '3', ARROW_QUANT_JOB_LEASE_MS: '4000' };
const BF16 = join(FIXTURE_MODELS, 'stories260K-bf16.safetensors');
const PRELOAD = `--require ${join(ROOT, 'test', 'helpers', 'enospc-preload.cjs')}`;

const start = (args: string[], env: NodeJS.ProcessEnv = {}): Proc => cluster.start(args, { ...ENV, ...env });

const worker = (args: string[] = [], env: NodeJS.ProcessEnv = {}) =>
  start(['worker', '--nats', cluster.nats.url, '--threads', '1', '--grace', '2', ...args], env);

const coordinator = (out: string, args: string[] = [], env: NodeJS.ProcessEnv = {}) =>
  start(['quantize', BF16, '-o', out, '--nats', cluster.nats.url, '--listen', '127.0.0.1:0', ...args], env);

/** Waits (bounded) until the shared consumer has nothing queued or in flight: what is left in the stream is dead. */
async function untilConsumerIdle(): Promise<void> {
  const nc = await connect({ servers: cluster.nats.url });
  try {
    const jsm = await nc.jetstreamManager();
    for (const deadline = Date.now() + 30_000; ; ) {
      const info = await jsm.consumers.info(TASK_STREAM, WORKER_CONSUMER);
      if (info.num_pending === 0 && info.num_ack_pending === 0) return;
      if (Date.now() > deadline) throw new Error(`the task consumer still has ${info.num_pending} queued, ${info.num_ack_pending} in flight after 30 s`);
      await new Promise((r) => setTimeout(r, 100)); // polling a condition, not a sleep standing in for one
    }
  } finally {
    await nc.close();
  }
}

/** Times the worker's log says it failed layer `i`. */
const failures = (w: Proc, i: number) => (w.err().match(new RegExp(`failed layer ${i} \\(`, 'g')) ?? []).length;

describe('cluster disk full', () => {
  test("cluster disk full - the coordinator's stage dir is full: exit 1 at once naming the path and the cause, no redeliveries, nothing left", async () => {
    const sub = join(dir, 'stage-full');
    mkdirSync(sub);
    const w = worker(['--model-root', FIXTURE_MODELS]);
    await w.waitFor(/ready/);
    // every shard goes through a stage file (no reorder window); layer 5's write fails
    const c = coordinator(join(sub, 'out.arrow'), ['--reorder-window-mb', '0'], {
      NODE_OPTIONS: PRELOAD, AQ_TEST_ENOSPC_MATCH: '\\.5\\.shard\\.upload-', AQ_TEST_ENOSPC_AFTER: '0',
    });
    expect(await c.exited, c.err()).toBe(1);
    expect(c.err()).toMatch(/cannot write \S+\.stage\/5\.shard: the disk is full \(no space left on device\)/);
    expect(c.err()).not.toMatch(/deliveries/);
    expect(failures(w, 5)).toBeLessThanOrEqual(1);
    expect(readdirSync(sub)).toEqual([]);
  });

  test("cluster disk full - the coordinator's partial output is full: exit 1 naming the path and the cause, nothing left", async () => {
    const sub = join(dir, 'partial-full');
    mkdirSync(sub);
    const w = worker(['--model-root', FIXTURE_MODELS]);
    await w.waitFor(/ready/);
    const c = coordinator(join(sub, 'out.arrow'), [], { NODE_OPTIONS: PRELOAD, AQ_TEST_ENOSPC_MATCH: '\\.partial$', AQ_TEST_ENOSPC_AFTER: String(100 << 10) });
    expect(await c.exited, c.err()).toBe(1);
    expect(c.err()).toMatch(/cannot write \S+out\.arrow: the disk is full \(no space left on device\)/);
    expect(c.err()).not.toMatch(/deliveries/);
    expect(readdirSync(sub)).toEqual([]);
  });

  test("cluster disk full - a worker's full work dir: the job fails after the deliveries naming the worker and the cause; a rerun finishes", async () => {
    const sub = join(dir, 'worker-full');
    const empty = join(dir, 'empty-root');
    mkdirSync(sub);
    mkdirSync(empty);
    // the worker cannot read the model: it downloads each layer into its work dir, where layer 2's download fails
    const w = worker(['--model-root', empty, '--allow-download', '--work-dir', join(dir, 'work'), '--id', 'full-disk-worker'], {
      NODE_OPTIONS: PRELOAD, AQ_TEST_ENOSPC_MATCH: '-2-\\d+\\.tensor\\.part-', AQ_TEST_ENOSPC_AFTER: '0',
    });
    await w.waitFor(/ready/);
    const out = join(sub, 'out.arrow');
    const c = coordinator(out, ['--allow-download']);
    expect(await c.exited, c.err()).toBe(1);
    expect(c.err()).toMatch(
      /layer 2 \(model\.layers\.0\.[\w.]+\): 3 deliveries failed; last: full-disk-worker: download of layer 2 of job "\w+": cannot write \S+\.tensor\.part-\S+: ENOSPC: no space left on device/,
    );
    expect(failures(w, 2)).toBe(3);
    expect(existsSync(out)).toBe(false);

    // A rerun within the de-duplication window once the disk has room: the exhausted task stays in
    // the stream but is never delivered again, so the rerun publishes layer 2 anew and finishes.
    w.signal('SIGTERM');
    await w.exited;
    // a worker with room drops what the failed run left queued or awaiting redelivery
    const w2 = worker(['--model-root', FIXTURE_MODELS]);
    await w2.waitFor(/ready/);
    await untilConsumerIdle();
    const again = coordinator(out);
    expect(await again.exited, again.err()).toBe(0);
    const local = join(sub, 'local.arrow');
    expect((await runCli(['quantize', BF16, '-o', local])).code).toBe(0);
    expect(Buffer.compare(readFileSync(out), readFileSync(local))).toBe(0);
  }, 90_000);
});
