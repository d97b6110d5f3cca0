// Cluster mode: what the coordinator accepts as a layer's shard (issue 10, items 2 and 16, and
// "a layer counts as done only if its bytes are where this run's merge reads them"), against a
// real nats-server, real worker and coordinator processes.
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { digestShard } from '../core/format/shard-digest.js';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { connect, type JsMsg, type NatsConnection } from 'nats';
import { TASK_STREAM, WORKER_CONSUMER, layerKey } from '../core/cluster/names.js';
import { decodeMessage, taskMessageSchema, type TaskMessage } from '../core/cluster/messages.js';
import { jobsBucket } from '../core/cluster/jetstream-setup.js';
import { ShardClient } from '../worker/cluster/shard-client.js';
import { ShardTransferError } from '../core/grpc/errors.js';
import { encodeShard } from '../core/format/arrow-file.js';
import type { LayerRecord } from '../core/format/layer-schema.js';
import { LayerRunner } from '../worker/layer-runner.js';
import { ThreadPool } from '../worker/thread-pool.js';
import type { Proc } from './helpers/processes.js';
import { FIXTURE_MODELS, runCli } from './helpers/cli.js';
import { writeSlowModel } from './helpers/models.js';
import { clusterFixture } from './helpers/cluster-fixture.js';

const cluster = clusterFixture('aq-cluster-shards-');
const { dir, modelsDir } = cluster;
const ENV = { ARROW_QUANT_TASK_ACK_WAIT_MS: '2000', ARROW_QUANT_TASK_MAX_DELIVER: '20' };
const BF16 = join(FIXTURE_MODELS, 'stories260K-bf16.safetensors');
const SLOW = { ARROWQUANT_KERNEL: 'reference' };
/** every wait on a job has this bound: a hang fails the test with the processes' output */
const JOB_BOUND_MS = 90_000;

let slowModel: string;
let slowLocal: Buffer;

beforeAll(async () => {
  ({ model: slowModel, local: slowLocal } = await writeSlowModel(dir, modelsDir, 3));
});

function worker(env: NodeJS.ProcessEnv = {}): Proc {
  return cluster.worker([], { ...ENV, ...env });
}

function coordinator(model: string, out: string, args: string[] = []): Proc {
  return cluster.start(['quantize', model, '-o', out, '--nats', cluster.nats.url, '--listen', '127.0.0.1:0', '--json', ...args], ENV);
}

async function exitWithin(p: Proc, what: string): Promise<number | string> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not end within ${JOB_BOUND_MS} ms:\n${p.err()}`)), JOB_BOUND_MS)));
  try {
    return await Promise.race([p.exited, bound]);
  } finally {
    clearTimeout(timer);
  }
}

/** Kill a coordinator of `slowModel` once at least one layer is staged; returns the staged layers. */
async function killAfterFirstUpload(c: Proc, ws: Proc[]): Promise<number[]> {
  await Promise.race(ws.map((w) => w.waitFor(/uploaded layer/, 2)));
  c.signal('SIGKILL');
  await c.exited;
  return ws.flatMap((w) => [...w.err().matchAll(/uploaded layer (\d+) /g)].map((m) => Number(m[1])));
}

describe('cluster shards', () => {
  test('cluster shards - the stage dir lost after a coordinator kill: recorded layers are redone, the job completes identical', async () => {
    const ws = [worker(SLOW), worker(SLOW)];
    await Promise.all(ws.map((w) => w.waitFor(/ready/)));
    const out = join(dir, 'lost-stage.arrow');
    const data = join(dir, 'lost-stage-data');
    const uploaded = await killAfterFirstUpload(coordinator(slowModel, out, ['--refine', 'search', '--data', data]), ws);
    expect(uploaded.length).toBeGreaterThan(0);
    // e.g. an emptyDir volume of a rescheduled pod, and the partial output of the killed run
    rmSync(data, { recursive: true, force: true });
    for (const f of readdirSync(dir).filter((n) => n.startsWith('.lost-stage.arrow.') && n.endsWith('.partial'))) rmSync(join(dir, f));

    const second = coordinator(slowModel, out, ['--refine', 'search', '--data', data]);
    expect(await exitWithin(second, 'the resumed coordinator'), second.err()).toBe(0);
    const m = /coordinator: (\d+) layers recorded in the job state are neither in (\S+) nor staged in (\S+) \(layers ([\d, ]+)\); they will be redone/.exec(second.err());
    expect(m, second.err()).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThanOrEqual(1);
    expect(m![2]).toMatch(/\.lost-stage\.arrow\.\w+\.partial$/);
    expect(m![3]).toContain(data);
    const s = JSON.parse(second.out());
    expect(s.layers_resumed).toBe(0);
    expect(s.layers_published).toBe(s.layers);
    expect(Buffer.compare(readFileSync(out), slowLocal)).toBe(0);
    // no worker skipped a layer as "already staged": it would never have been staged again
    expect(ws.some((w) => /skipped layer/.test(w.err()))).toBe(false);
  });

  test('cluster shards - one worker: shards go straight into the partial output; a killed coordinator resumes from it, redoing none', async () => {
    const w = worker(SLOW);
    await w.waitFor(/ready/);
    const out = join(dir, 'partial.arrow');
    const first = coordinator(slowModel, out, ['--refine', 'search']);
    const uploaded = await killAfterFirstUpload(first, [w]);
    expect(uploaded.length).toBeGreaterThanOrEqual(2);
    const logLength = w.err().length;
    const second = coordinator(slowModel, out, ['--refine', 'search']);
    expect(await exitWithin(second, 'the resumed coordinator'), second.err()).toBe(0);
    const found = /coordinator: (\d+) layers found written in (\S+); continuing after them/.exec(second.err());
    expect(found, second.err()).not.toBeNull();
    expect(Number(found![1])).toBeGreaterThanOrEqual(uploaded.length);
    expect(found![2]).toMatch(/\.partial\.arrow\.\w+\.partial$/);
    const s = JSON.parse(second.out());
    expect(s.layers_resumed).toBe(Number(found![1]));
    const again = [...w.err().slice(logLength).matchAll(/uploaded layer (\d+) /g)].map((m) => Number(m[1]));
    for (const l of again) expect(uploaded.includes(l), `layer ${l} was uploaded again`).toBe(false);
    expect(Buffer.compare(readFileSync(out), slowLocal)).toBe(0);
    expect(readdirSync(dir).filter((n) => n.startsWith('.partial.arrow.'))).toEqual([]);
  });

  test('cluster shards - a corrupted staged shard at resume is redone (its job-state key goes too), the job completes identical', async () => {
    const ws = [worker(SLOW), worker(SLOW)];
    await Promise.all(ws.map((w) => w.waitFor(/ready/)));
    const out = join(dir, 'bad-stage.arrow');
    const data = join(dir, 'bad-stage-data');
    // no reorder window: every shard goes through its stage file (none is written directly)
    const uploaded = await killAfterFirstUpload(coordinator(slowModel, out, ['--refine', 'search', '--data', data, '--reorder-window-mb', '0']), ws);
    const stageDirs = readdirSync(data);
    expect(stageDirs).toHaveLength(1);
    const jobId = stageDirs[0]!;
    const layer = uploaded[0]!;
    const shard = join(data, jobId, `${layer}.shard`);
    expect(existsSync(shard)).toBe(true);
    const bytes = readFileSync(shard);
    bytes[bytes.length - 100] = bytes[bytes.length - 100]! ^ 0xff;
    writeFileSync(shard, bytes);
    const sha = digestShard(bytes).sha256;
    // without the partial output the stage files are all there is (else layers already copied
    // into it would count as written there, whatever their stage file holds)
    for (const f of readdirSync(dir).filter((n) => n.startsWith('.bad-stage.arrow.') && n.endsWith('.partial'))) rmSync(join(dir, f));

    const second = coordinator(slowModel, out, ['--refine', 'search', '--data', data]);
    await second.waitFor(new RegExp(`staged shard of layer ${layer} is not usable \\(its digest ${sha} is not the recorded [0-9a-f]{64}\\); it will be redone`));
    expect(await exitWithin(second, 'the resumed coordinator'), second.err()).toBe(0);
    expect(Buffer.compare(readFileSync(out), slowLocal)).toBe(0);
    const s = JSON.parse(second.out());
    expect(s.layers_resumed).toBeLessThan(s.layers);
    expect(s.layers_resumed + s.layers_published).toBe(s.layers);
    // and the job state holds no layer keys once the job is done
    const nc = await connect({ servers: cluster.nats.url });
    try {
      const kv = await jobsBucket(nc);
      expect((await kv.get(layerKey(jobId, layer)))?.operation ?? 'none').not.toBe('PUT');
    } finally {
      await nc.close();
    }
  });

  test('cluster shards - with no reorder window and one upload at a time every shard is copied from its stage file: same bytes', async () => {
    const ws = [worker(), worker()];
    await Promise.all(ws.map((w) => w.waitFor(/ready/)));
    const out = join(dir, 'no-window.arrow');
    const c = coordinator(BF16, out, ['--reorder-window-mb', '0', '--max-uploads', '1']);
    expect(await exitWithin(c, 'the coordinator'), c.err()).toBe(0);
    const local = join(dir, 'no-window-local.arrow');
    expect((await runCli(['quantize', BF16, '-o', local])).code).toBe(0);
    expect(Buffer.compare(readFileSync(out), readFileSync(local))).toBe(0);
    const summary = JSON.parse(c.out());
    expect(summary).toMatchObject({ layers: 48, layers_published: 48, shards_written_directly: 0, shards_from_memory: 0, shards_from_stage_files: 48 });
    // the summary reports what the workers did: their kernel, their threads in all, their thread time
    const kernel = /ready \(kernel (\w+), 1 threads/.exec(ws[0]!.err())![1];
    expect(summary.kernel).toBe(kernel);
    expect(summary.threads).toBe(summary.workers.length); // each worker has 1 thread
    expect(summary.timings_s.kernel).toBeGreaterThan(0);
    expect(summary.timings_s.read).toBeGreaterThan(0);
  });

  test('cluster shards - shards the plan does not produce are refused naming the field; a real worker then completes the job', async () => {
    const out = join(dir, 'plan-check.arrow');
    const c = coordinator(BF16, out);
    const jobId = (await c.waitFor(/job \w+: 48 layers/))[0]!.split(' ')[1]!.replace(':', '');
    const nc: NatsConnection = await connect({ servers: cluster.nats.url });
    const pool = await ThreadPool.start(1);
    try {
      // this test is the misbehaving worker: pull a 4-bit task of the job, upload wrong shards, release it
      const consumer = await nc.jetstream().consumers.get(TASK_STREAM, WORKER_CONSUMER);
      let msg: JsMsg | null = null;
      let tm: TaskMessage | null = null;
      while (!tm) {
        msg = await consumer.next({ expires: 1000 });
        if (!msg) continue;
        const m = decodeMessage(taskMessageSchema, msg.data, msg.subject);
        if (m.task.job_id === jobId && m.task.bits === 4) tm = m;
        else if (m.task.job_id === jobId) msg.nak();
        else msg.term(); // left over by an earlier test
      }
      const runner = new LayerRunner(pool);
      const shardOf = async (bits: 4 | 8, edit: (r: LayerRecord) => LayerRecord = (r) => r) => {
        const result = await runner.run({ ...tm!.task, bits });
        try {
          return Buffer.from(encodeShard(edit(result.record)));
        } finally {
          result.release();
        }
      };
      const client = new ShardClient(tm.coordinator, null);
      const header = { job_id: jobId, layer_index: tm.task.layer_index, plan_hash: tm.task.plan_hash, worker_id: 'test-bad-worker' };
      const refused = async (shard: Buffer, message: RegExp) => {
        const err = await client.upload(header, [shard]).then(() => null, (e: unknown) => e);
        expect(err).toBeInstanceOf(ShardTransferError);
        expect((err as ShardTransferError).codeName).toBe('FAILED_PRECONDITION');
        expect((err as Error).message).toMatch(message);
      };
      const at = `layer ${tm.task.layer_index} \\(${tm.task.name.replace(/\./g, '\\.')}\\)`;
      // a genuine 8-bit shard of the layer
      await refused(await shardOf(8), new RegExp(`does not match the job's plan: shard of ${at}: planned_bit_width is 8, the job's plan gives 4`));
      // a 4-bit shard claiming 8 bits, as if a quality fallback had happened
      await refused(await shardOf(4, (r) => ({ ...r, bit_width: 8, quant_type: 'int8' })), new RegExp(`${at}: data length is \\d+, the job's plan gives \\d+`));
      // a 4-bit shard whose data_sha256 is not its data's
      await refused(await shardOf(4, (r) => ({ ...r, data_sha256: 'ab'.repeat(32) })), new RegExp(`${at}: data_sha256 is "${'ab'.repeat(32)}", the job's plan gives the SHA-256 of its data`));
      // another group size
      await refused(await shardOf(4, (r) => ({ ...r, group_size: 64 })), new RegExp(`${at}: group_size is 64, the job's plan gives 128`));
      msg!.nak();
      client.close();

      worker();
      expect(await exitWithin(c, 'the coordinator'), c.err()).toBe(0);
      const local = join(dir, 'plan-check-local.arrow');
      expect((await runCli(['quantize', BF16, '-o', local])).code).toBe(0);
      expect(Buffer.compare(readFileSync(out), readFileSync(local))).toBe(0);
    } finally {
      await pool.close();
      await nc.close();
    }
  });
});
