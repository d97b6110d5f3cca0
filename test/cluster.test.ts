// Cluster mode against a real nats-server and real worker processes: output equal to the local
// run byte for byte, and the guarantees of distributed.md under kills and restarts.
import { existsSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { connect, type NatsConnection } from 'nats';
import { resolveConfig } from '../core/config/load.js';
import { prepareJob } from '../coordinator/job.js';
import { TASK_STREAM, WORKER_CONSUMER, eventsSubject } from '../core/cluster/names.js';
import { decodeMessage, encodeMessage, taskMessageSchema, workerEventSchema } from '../core/cluster/messages.js';
import { ShardClient } from '../worker/cluster/shard-client.js';
import { ShardTransferError } from '../core/grpc/errors.js';
import { encodeShard } from '../core/format/arrow-file.js';
import { startCli, stopAll, type Proc } from './helpers/processes.js';
import { FIXTURE_MODELS, runCli } from './helpers/cli.js';
import { writeSlowModel } from './helpers/models.js';
import { clusterFixture } from './helpers/cluster-fixture.js';

const cluster = clusterFixture('aq-cluster-');
const { dir, modelsDir } = cluster;
// Short ack wait so that a killed worker's task comes back quickly; heartbeats keep live ones.
const ENV = { ARROW_QUANT_TASK_ACK_WAIT_MS: '2000', ARROW_QUANT_TASK_MAX_DELIVER: '20', ARROW_QUANT_JOB_LEASE_MS: '4000' };
const BF16 = join(FIXTURE_MODELS, 'stories260K-bf16.safetensors');
const MIXED = ['--mixed-precision', '--target-size-mb', '0.22'];

let slowModel: string;
let slowLocal: Buffer;

beforeAll(async () => {
  ({ model: slowModel, local: slowLocal } = await writeSlowModel(dir, modelsDir, 3));
});

function worker(args: string[] = [], env: NodeJS.ProcessEnv = {}): Proc {
  return cluster.worker(args, { ...ENV, ...env });
}

function coordinator(model: string, out: string, args: string[] = []): Proc {
  return cluster.start(['quantize', model, '-o', out, '--nats', cluster.nats.url, '--listen', '127.0.0.1:0', '--json', ...args], ENV);
}

const SLOW = { ARROWQUANT_KERNEL: 'reference' };

describe('cluster', () => {
  test(`cluster - 1, 2 and 3 workers write the local run's bytes`, async () => {
    const local = join(dir, 'local.arrow');
    expect((await runCli(['quantize', BF16, '-o', local, ...MIXED])).code).toBe(0);
    for (const n of [1, 2, 3]) {
      const ws = Array.from({ length: n }, () => worker());
      await Promise.all(ws.map((w) => w.waitFor(/ready/)));
      const out = join(dir, `c${n}.arrow`);
      const c = coordinator(BF16, out, MIXED);
      expect(await c.exited, c.err()).toBe(0);
      const summary = JSON.parse(c.out());
      expect(summary).toMatchObject({ mode: 'cluster', layers: 48, layers_published: 48, layers_resumed: 0, bytes_out: 217760 });
      expect(summary.grpc_bytes_received).toBeGreaterThan(0);
      // the default reorder window holds every shard of this small model; one worker uploads in
      // canonical order, so each shard is written straight into the output
      expect(summary.shards_written_directly + summary.shards_from_memory).toBe(48);
      expect(summary.shards_from_stage_files).toBe(0);
      if (n === 1) expect(summary.shards_written_directly).toBe(48);
      expect(Buffer.compare(readFileSync(out), readFileSync(local))).toBe(0);
      await stopAll(ws);
      for (const w of ws) expect(w.err()).toMatch(/stopped after \d+ layers/);
      expect(ws.reduce((s, w) => s + (w.err().match(/uploaded layer/g)?.length ?? 0), 0)).toBe(48);
      cluster.procs.length = 0;
    }
    // nothing staged is left next to the output
    expect(readdirSync(dir).filter((f) => f.includes('.stage'))).toEqual([]);
  });

  test('cluster - a worker SIGKILLed in the middle of a layer: the job completes, identical output', async () => {
    const a = worker([], SLOW);
    const b = worker([], SLOW);
    await Promise.all([a.waitFor(/ready/), b.waitFor(/ready/)]);
    const out = join(dir, 'kill-worker.arrow');
    const c = coordinator(slowModel, out, ['--refine', 'search']);
    await a.waitFor(/uploaded layer/);
    a.signal('SIGKILL'); // it has already pulled its next layer
    expect(await a.exited).toBe('SIGKILL');
    expect(await c.exited, c.err()).toBe(0);
    expect(Buffer.compare(readFileSync(out), slowLocal)).toBe(0);
  });

  test('cluster - the coordinator SIGKILLed and started again resumes and redoes no finished layer', async () => {
    const ws = [worker([], SLOW), worker([], SLOW)];
    await Promise.all(ws.map((w) => w.waitFor(/ready/)));
    const out = join(dir, 'resume.arrow');
    const first = coordinator(slowModel, out, ['--refine', 'search']);
    await Promise.race([ws[0]!.waitFor(/uploaded layer/, 3), ws[1]!.waitFor(/uploaded layer/, 3)]);
    first.signal('SIGKILL');
    await first.exited;
    const uploadedBefore = new Set(ws.flatMap((w) => [...w.err().matchAll(/uploaded layer (\d+) /g)].map((m) => Number(m[1]))));
    const logLength = ws.map((w) => w.err().length);
    expect(existsSync(out)).toBe(false);
    const second = coordinator(slowModel, out, ['--refine', 'search']);
    expect(await second.exited, second.err()).toBe(0);
    const s = JSON.parse(second.out());
    expect(s.layers_resumed).toBeGreaterThanOrEqual(uploadedBefore.size > 0 ? 1 : 0);
    expect(s.layers_resumed + s.layers_published).toBe(s.layers);
    // every layer uploaded before the kill was resumed from its staged shard, not redone
    const after = ws.flatMap((w, i) => [...w.err().slice(logLength[i]).matchAll(/uploaded layer (\d+) /g)].map((m) => Number(m[1])));
    for (const l of after) expect(uploadedBefore.has(l), `layer ${l} was uploaded again`).toBe(false);
    expect(s.layers_resumed).toBeGreaterThanOrEqual(uploadedBefore.size);
    expect(Buffer.compare(readFileSync(out), slowLocal)).toBe(0);
    // the killed run's partial output is where the run that took over continued; nothing is left
    if (s.layers_resumed > 0) expect(second.err()).toMatch(/layers found written in .*\.resume\.arrow\.[0-9a-f]+\.partial; continuing after them|already staged/);
    expect(readdirSync(dir).filter((f) => f.includes('resume.arrow.') && (f.includes('.tmp-') || f.endsWith('.partial')))).toEqual([]);
  });

  test('cluster - NATS restarted mid-job: coordinator and workers reconnect, the job completes', async () => {
    const ws = [worker([], SLOW), worker([], SLOW)];
    await Promise.all(ws.map((w) => w.waitFor(/ready/)));
    const out = join(dir, 'nats-restart.arrow');
    const c = coordinator(slowModel, out, ['--refine', 'search']);
    await Promise.race(ws.map((w) => w.waitFor(/uploaded layer/)));
    await cluster.nats.restart();
    expect(await c.exited, c.err()).toBe(0);
    expect(Buffer.compare(readFileSync(out), slowLocal)).toBe(0);
    expect(ws.some((w) => /NATS (disconnect|reconnect)/.test(w.err()))).toBe(true);
  });

  test(`cluster - a task naming a file outside the worker's model roots is refused and reported`, async () => {
    const w = startCli(['worker', '--nats', cluster.nats.url, '--threads', '1', '--model-root', join(dir, 'models')], ENV);
    cluster.procs.push(w);
    await w.waitFor(/ready/);
    const c = coordinator(BF16, join(dir, 'refused.arrow'));
    expect(await c.exited, c.err()).toBe(1);
    expect(c.err()).toMatch(/refused layer \d+ \(.+\) of job \w+: .*stories260K-bf16\.safetensors is not under its model roots/);
    expect(existsSync(join(dir, 'refused.arrow'))).toBe(false);
    // a crafted task of a job no coordinator holds: dropped at once, nothing read, nothing reported
    const nc = await connect({ servers: cluster.nats.url });
    const events: unknown[] = [];
    const sub = nc.subscribe(eventsSubject('crafted'), { callback: (_e, m) => events.push(decodeMessage(workerEventSchema, m.data, m.subject)) });
    const real = prepareJob(BF16, resolveConfig({}), join(dir, 'unused.arrow')).tasks[0]!;
    const crafted = { task: { ...real, job_id: 'crafted', file: '/etc/passwd', file_name: 'passwd' }, run_id: 'abcdef0123456789', coordinator: '127.0.0.1:9', tls: false, allow_download: false };
    await nc.jetstream().publish('aq.tasks.crafted', encodeMessage(crafted));
    await w.waitFor(/dropped layer 0 \(.+\) of job crafted: no coordinator holds the job/);
    await nc.flush();
    expect(events).toEqual([]);
    expect(w.err()).not.toMatch(/passwd is not under/);
    sub.unsubscribe();
    await nc.close();
  });

  test('cluster - a worker without the model files downloads tensors (--allow-download); its health service answers', async () => {
    const empty = join(dir, 'no-models');
    mkdirSync(empty, { recursive: true });
    const w = startCli(['worker', '--nats', cluster.nats.url, '--threads', '1', '--model-root', empty, '--health-listen', '127.0.0.1:0', '--allow-download'], ENV);
    cluster.procs.push(w);
    await w.waitFor(/ready/);
    const address = /health service on (\S+)/.exec((await w.waitFor(/health service on \S+/))[0]!)![1]!;
    const probe = new ShardClient(address, null);
    expect(await probe.health()).toBe('SERVING');
    probe.close();
    const out = join(dir, 'downloaded.arrow');
    const c = coordinator(BF16, out, [...MIXED, '--allow-download']);
    expect(await c.exited, c.err()).toBe(0);
    const local = join(dir, 'download-local.arrow');
    expect((await runCli(['quantize', BF16, '-o', local, ...MIXED])).code).toBe(0);
    expect(Buffer.compare(readFileSync(out), readFileSync(local))).toBe(0);
    expect(w.err()).not.toMatch(/refused/);
  });

  test('cluster - status lists workers and jobs; cancel stops a job and leaves nothing', async () => {
    const w = worker([], SLOW);
    await w.waitFor(/ready/);
    const out = join(dir, 'cancelled.arrow');
    const c = coordinator(slowModel, out, ['--refine', 'search', '--bits', '8']);
    const jobId = (await c.waitFor(/job \w+: \d+ layers/))[0]!.split(' ')[1]!.replace(':', '');
    await w.waitFor(/uploaded layer/);
    const st = await runCli(['status', '--nats', cluster.nats.url, '--json']);
    expect(st.code, st.stderr).toBe(0);
    const doc = JSON.parse(st.stdout);
    expect(doc.workers.some((x: { kernel: string; threads: number }) => x.kernel === 'reference' && x.threads === 1)).toBe(true);
    expect(doc.jobs.find((j: { job_id: string }) => j.job_id === jobId), `${jobId} in ${st.stdout}`).toMatchObject({ state: 'running', model: 'slow' });
    expect(st.stderr).toMatch(/1 job\(s\)|\d+ job\(s\)/);
    const cancel = await runCli(['cancel', jobId, '--nats', cluster.nats.url]);
    expect(cancel.code).toBe(0);
    expect(await c.exited).toBe(130);
    expect(c.err()).toMatch(new RegExp(`job ${jobId} was cancelled`));
    expect(existsSync(out)).toBe(false);
    expect(readdirSync(dir).filter((f) => f.startsWith('.cancelled.arrow'))).toEqual([]);
    const after = JSON.parse((await runCli(['status', jobId, '--nats', cluster.nats.url, '--json'])).stdout);
    expect(after.jobs[0]).toMatchObject({ job_id: jobId, state: 'cancelled', layers_staged: 0 });
  });

  test('cluster - corrupted shard uploads are rejected and the task is redelivered', async () => {
    const out = join(dir, 'corrupt.arrow');
    const c = coordinator(BF16, out);
    // this test is the misbehaving worker: pull one task, upload garbage, release it
    const nc: NatsConnection = await connect({ servers: cluster.nats.url });
    const consumer = await nc.jetstream().consumers.get(TASK_STREAM, WORKER_CONSUMER);
    const jobId = (await c.waitFor(/job \w+: 48 layers/))[0]!.split(' ')[1]!.replace(':', '');
    let msg = null;
    let tm = null;
    while (!tm) {
      msg = await consumer.next({ expires: 1000 });
      if (!msg) continue;
      const m = decodeMessage(taskMessageSchema, msg.data, msg.subject);
      if (m.task.job_id === jobId) tm = m;
      else msg.term(); // left over by an earlier test
    }
    msg = msg!;
    const client = new ShardClient(tm.coordinator, null);
    const good = encodeShard({
      layer_name: 'not-this-layer', layer_index: tm.task.layer_index, shape: [1], source_dtype: 'BF16', quant_type: 'int4', bit_width: 4, method: 'base',
      group_size: 128, data: Uint8Array.of(1), scales: Uint16Array.of(0x3c00), zero_points: Uint16Array.of(0), equalization_scales: null,
      act_bit_width: null, time_group_params: null, sqnr_db: 1, cosine: 1, planned_bit_width: 4, notes: null, data_sha256: '00'.repeat(32),
    });
    const header = { job_id: tm.task.job_id, layer_index: tm.task.layer_index, plan_hash: tm.task.plan_hash, worker_id: 'test-bad-worker' };
    const err = await client.upload(header, [good]).catch((e) => e);
    expect(err).toBeInstanceOf(ShardTransferError);
    expect(String(err.message), String(err.message)).toMatch(/DATA_LOSS/);
    msg.nak();
    client.close();
    // a real worker then does the layer; the job completes with the local run's bytes
    worker();
    expect(await c.exited, c.err()).toBe(0);
    const local = join(dir, 'corrupt-local.arrow');
    expect((await runCli(['quantize', BF16, '-o', local])).code).toBe(0);
    expect(Buffer.compare(readFileSync(out), readFileSync(local))).toBe(0);
    await nc.close();
  });
});
