// Reruns of one job within the task stream's 10-minute de-duplication window (issue 10): each
// pending task is delivered exactly once, however many coordinators published it; a task an
// earlier, cancelled run left queued is worked on for the rerun, not dropped; one that vanished
// from the queue without being staged is published again. Real nats-server,
// real worker and coordinator processes; deliveries counted on the shared consumer.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { connect, type NatsConnection } from 'nats';
import { TASK_STREAM, WORKER_CONSUMER, cancelSubject, taskSubject } from '../core/cluster/names.js';
import { encodeMessage } from '../core/cluster/messages.js';
import { resolveConfig } from '../core/config/load.js';
import { prepareJob } from '../coordinator/job.js';
import { startNatsServer, type NatsTestServer } from './helpers/nats-server.js';
import { startCli, stopAll, type Proc } from './helpers/processes.js';
import { FIXTURE_MODELS, runCli } from './helpers/cli.js';
import { tempDir } from './helpers/models.js';
import { holdJob, taskMessage } from './helpers/job-holder.js';

const { dir, cleanup } = tempDir('aq-dedup-');
const ENV = { ARROW_QUANT_TASK_ACK_WAIT_MS: '2000', ARROW_QUANT_JOB_LEASE_MS: '4000' };
const BF16 = join(FIXTURE_MODELS, 'stories260K-bf16.safetensors');

let nats: NatsTestServer;
let nc: NatsConnection;
let procs: Proc[] = [];

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
});

afterEach(async () => {
  await stopAll(procs);
  procs = [];
});

afterAll(async () => {
  await nc?.close();
  await nats?.stop();
  cleanup();
});

function start(args: string[]): Proc {
  const p = startCli(args, ENV);
  procs.push(p);
  return p;
}

const worker = (args: string[] = []) => start(['worker', '--nats', nats.url, '--threads', '1', '--model-root', FIXTURE_MODELS, '--grace', '2', ...args]);
const coordinator = (out: string) => start(['quantize', BF16, '-o', out, '--nats', nats.url, '--listen', '127.0.0.1:0', '--json']);
const count = (p: Proc, re: RegExp) => (p.err().match(new RegExp(re.source, 'gm')) ?? []).length;

/** Deliveries the shared consumer has made so far (redeliveries included). */
async function deliveries(): Promise<number> {
  return (await (await nc.jetstreamManager()).consumers.info(TASK_STREAM, WORKER_CONSUMER)).delivered.consumer_seq;
}

describe('cluster dedup', () => {
  test('cluster dedup - a rerun and a second rerun within the window: each pending task is delivered exactly once', async () => {
    const out = join(dir, 'rerun.arrow');
    const local = join(dir, 'local.arrow');
    expect((await runCli(['quantize', BF16, '-o', local])).code).toBe(0);
    // a finished run: its 48 task ids are in the window, their messages acked and gone
    const w1 = worker();
    await w1.waitFor(/ready/);
    const c1 = coordinator(out);
    expect(await c1.exited, c1.err()).toBe(0);
    w1.signal('SIGTERM');
    expect(await w1.exited).toBe(0);
    // a rerun with no worker publishes the 48 again, and dies
    const c2 = coordinator(out);
    await c2.waitFor(/48 layers, 0 already staged, 48 published; shards to/);
    c2.signal('SIGKILL');
    await c2.exited;
    // the second and third reruns find those copies queued and publish nothing more
    const c3 = coordinator(out);
    await c3.waitFor(/48 published.*; shards to/);
    c3.signal('SIGKILL');
    await c3.exited;
    const before = await deliveries();
    const c4 = coordinator(out);
    await c4.waitFor(/48 published.*; shards to/);
    const w2 = worker();
    expect(await c4.exited, c4.err()).toBe(0);
    expect(Buffer.compare(readFileSync(out), readFileSync(local))).toBe(0);
    expect(await deliveries() - before).toBe(48);
    expect(count(w2, /uploaded layer/)).toBe(48);
    expect(count(w2, /skipped layer|dropped layer/)).toBe(0);
    const stream = await (await nc.jetstreamManager()).streams.info(TASK_STREAM);
    expect(stream.state.messages).toBe(0);
    for (const c of [c3, c4]) expect(c.err()).toMatch(/48 layers, 0 already staged, 48 published \(48 still queued from an earlier run\); shards to/);
  }, 120_000);

  test('cluster dedup - a task acked without being staged (vanished from the queue) is published again once and the job finishes', async () => {
    const out = join(dir, 'vanished.arrow');
    const local = join(dir, 'local8.arrow');
    expect((await runCli(['quantize', BF16, '-o', local, '--bits', '8'])).code).toBe(0);
    const c = start(['quantize', BF16, '-o', out, '--nats', nats.url, '--listen', '127.0.0.1:0', '--bits', '8']);
    await c.waitFor(/48 published.*; shards to/);
    // the test plays a worker that acks a task and stages nothing (as one that wrongly skipped it)
    const m = await (await nc.jetstream().consumers.get(TASK_STREAM, WORKER_CONSUMER)).next({ expires: 10_000 });
    expect(m).not.toBeNull();
    const layer = (JSON.parse(new TextDecoder().decode(m!.data)) as { task: { layer_index: number } }).task.layer_index;
    await m!.ackAck();
    worker();
    expect(await c.exited, c.err()).toBe(0);
    expect(c.err()).toMatch(new RegExp(`layer\\(s\\) ${layer} left the task queue without being staged; publishing them again \\(once\\)`));
    expect(Buffer.compare(readFileSync(out), readFileSync(local))).toBe(0);
  }, 90_000);

  test('cluster dedup - a task left queued by a cancelled earlier run is worked on for the run holding the job now', async () => {
    const w = worker();
    await w.waitFor(/ready/);
    const job = prepareJob(BF16, resolveConfig({}), join(dir, 'held.arrow'));
    const jobId = 'dedupcancelled';
    const earlier = 'aaaaaaaaaaaaaaaa';
    nc.publish(cancelSubject(jobId), encodeMessage({ run_id: earlier }));
    await w.waitFor(new RegExp(`job ${jobId} \\(run ${earlier}\\) cancelled`));
    // the job is held by another run (the test's, run 0123456789abcdef); its coordinator address serves nothing
    await holdJob(nc, jobId, '127.0.0.1:9');
    await nc.jetstream().publish(taskSubject(jobId), encodeMessage(taskMessage(job.tasks[0]!, jobId, '127.0.0.1:9', { run_id: earlier })));
    // it is quantized and its upload attempted (before: dropped without a word)
    await w.waitFor(new RegExp(`upload of layer 0 of job ${jobId} failed \\(.*127\\.0\\.0\\.1:9.*\\); retrying`));
  }, 60_000);
});
