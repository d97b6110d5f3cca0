// allocation_strategy: measured in cluster mode: the candidate measurements run as measure tasks
// on real worker processes (a real nats-server), the plan — hence the file — is the local run's
// byte for byte, the coordinator's measurement cache still answers, and every way a measurement
// can fail ends the job with an error naming the layer or what was waited for.
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { connect } from 'nats';
import { ensureTaskQueue, jobsBucket, workersBucket } from '../core/cluster/jetstream-setup.js';
import { measureKey, measureKeys, measureSubject } from '../core/cluster/names.js';
import { encodeMessage } from '../core/cluster/messages.js';
import { measureId } from '../core/cluster/measure-messages.js';
import { resolveConfig } from '../core/config/load.js';
import { prepareJob } from '../coordinator/job.js';
import { startNatsServer, type NatsTestServer } from './helpers/nats-server.js';
import { startCli, stopAll, type Proc } from './helpers/processes.js';
import { FIXTURE_MODELS, ROOT, runCli } from './helpers/cli.js';
import { tempDir } from './helpers/models.js';

const { dir, cleanup } = tempDir('aq-cluster-measure-');
const ENV = { ARROW_QUANT_TASK_ACK_WAIT_MS: '2000', ARROW_QUANT_TASK_MAX_DELIVER: '20', ARROW_QUANT_JOB_LEASE_MS: '4000' };
const BF16 = join(FIXTURE_MODELS, 'stories260K-bf16.safetensors');
const MEASURED = ['--mixed-precision', '--strategy', 'measured', '--target-size-mb', '0.22'];
/** The coordinator's log line after measuring. */
const SUMMARY = /(\d+) measurements by workers \((\d+) measure tasks\)(?:, (\d+) from (\d+) results an earlier run left)?, (\d+) from the cache/;

let nats: NatsTestServer;
let procs: Proc[] = [];
const emptyRoot = join(dir, 'elsewhere');

beforeAll(async () => {
  nats = await startNatsServer();
  mkdirSync(emptyRoot);
});

afterEach(async () => {
  await stopAll(procs);
  procs = [];
});

afterAll(async () => {
  await nats?.stop();
  cleanup();
});

function worker(root = FIXTURE_MODELS, env: NodeJS.ProcessEnv = {}): Proc {
  const p = startCli(['worker', '--nats', nats.url, '--concurrency', '1', '--threads', '1', '--model-root', root, '--grace', '5'], { ...ENV, ...env });
  procs.push(p);
  return p;
}

function coordinator(out: string, args: string[]): Proc {
  const p = startCli(['quantize', BF16, '-o', out, '--nats', nats.url, '--listen', '127.0.0.1:0', '--json', ...MEASURED, ...args], ENV);
  procs.push(p);
  return p;
}

let searchLocal: Promise<string> | null = null;
/** The local run with refine: search (what the slow cluster tests compare with), made once. */
function localSearchRun(): Promise<string> {
  searchLocal ??= (async () => {
    const local = join(dir, 'search-local.arrow');
    const r = await runCli(['quantize', BF16, '-o', local, ...MEASURED, '--refine', 'search', '--cache-dir', join(dir, 'search-local-cache')]);
    expect(r.code, r.stderr).toBe(0);
    return local;
  })();
  return searchLocal;
}

const measuredLines = (w: Proc) => w.err().match(/: measured layer \d+ /g)?.length ?? 0;

async function measureKeysLeft(jobId: string): Promise<string[]> {
  const nc = await connect({ servers: nats.url });
  try {
    const keys: string[] = [];
    for await (const k of await (await jobsBucket(nc)).keys(measureKeys(jobId))) keys.push(k);
    return keys;
  } finally {
    await nc.close();
  }
}

describe('cluster measure', () => {
  test('cluster measure - no worker at all: the measurement ends at the stall timeout, saying what it waited for', async () => {
    const c = coordinator(join(dir, 'stalled.arrow'), ['--cache-dir', join(dir, 'stalled-cache'), '--stall-timeout', '2']);
    expect(await c.exited).toBe(1);
    expect(c.err()).toMatch(/no measurement result from the workers for \d+ s \(\d+ outstanding, e\.g\. layer \d+ \([^)]+\) at group size \d+, v[12]\): no live workers/);
  }, 60_000);

  test(`cluster measure - two workers measure every candidate, the file is the local run's, and the coordinator's cache answers a second run`, async () => {
    const local = join(dir, 'local.arrow');
    const localRun = await runCli(['quantize', BF16, '-o', local, ...MEASURED, '--cache-dir', join(dir, 'local-cache'), '--json']);
    expect(localRun.code, localRun.stderr).toBe(0);
    const plan = await runCli(['plan', BF16, ...MEASURED, '--cache-dir', join(dir, 'plan-cache'), '--json']);
    const asked = JSON.parse(plan.stdout).measurements as { measured: number; cached: number };

    const ws = [worker(), worker()];
    await Promise.all(ws.map((w) => w.waitFor(/ready/)));
    const cache = join(dir, 'coordinator-cache');
    const out = join(dir, 'cluster.arrow');
    const c = coordinator(out, ['--cache-dir', cache]);
    expect(await c.exited, c.err()).toBe(0);
    expect(Buffer.compare(readFileSync(out), readFileSync(local))).toBe(0);
    const m = SUMMARY.exec(c.err());
    expect(m, c.err()).not.toBeNull();
    const [byWorkers, tasks, cached] = [Number(m![1]), Number(m![2]), Number(m![5])];
    // every (layer, width, group, encoding) the plan asks for, by the workers; the only cache hits
    // are layers with the same bytes as one measured earlier in this run (the cache key is the bytes' hash)
    const total = asked.measured + asked.cached;
    expect(byWorkers + cached).toBe(total);
    // and the workers' own logs account for every one of those measurements (widths per task)
    const widthsLogged = ws.flatMap((w) => [...w.err().matchAll(/: measured layer .* at ([\d, ]+) bits in/g)].map((x) => x[1]!.split(', ').length));
    expect(widthsLogged.reduce((a, b) => a + b, 0)).toBe(byWorkers);
    expect(tasks).toBeGreaterThan(48);
    // each measure task ran on a worker, and both took some; no result is left in the job state
    expect(ws.map(measuredLines).reduce((a, b) => a + b, 0)).toBe(tasks);
    for (const w of ws) expect(measuredLines(w)).toBeGreaterThan(0);
    const summary = JSON.parse(c.out());
    expect(summary).toMatchObject({ mode: 'cluster', layers: 48, bytes_out: JSON.parse(localRun.stdout).bytes_out });
    expect(await measureKeysLeft(summary.job_id)).toEqual([]);

    // the same job again with the same coordinator cache: no measure task at all
    const before = ws.map(measuredLines);
    const again = join(dir, 'cluster-again.arrow');
    const c2 = coordinator(again, ['--cache-dir', cache]);
    expect(await c2.exited, c2.err()).toBe(0);
    expect(c2.err()).toMatch(new RegExp(`0 measurements by workers \\(0 measure tasks\\), ${total} from the cache`));
    expect(ws.map(measuredLines)).toEqual(before);
    expect(Buffer.compare(readFileSync(again), readFileSync(local))).toBe(0);
  }, 120_000);

  test('cluster measure - a worker SIGKILLed while measuring: its task is redelivered, the file is the local run\'s', async () => {
    const slow = { ARROWQUANT_KERNEL: 'reference' };
    const local = await localSearchRun();
    const a = worker(FIXTURE_MODELS, slow);
    const b = worker(FIXTURE_MODELS, slow);
    await Promise.all([a.waitFor(/ready/), b.waitFor(/ready/)]);
    const out = join(dir, 'search-cluster.arrow');
    const c = coordinator(out, ['--refine', 'search', '--cache-dir', join(dir, 'search-cluster-cache')]);
    await a.waitFor(/: measured layer/);
    a.signal('SIGKILL'); // it has already pulled its next measure task
    expect(await a.exited).toBe('SIGKILL');
    expect(await c.exited, c.err()).toBe(0);
    expect(Buffer.compare(readFileSync(out), readFileSync(local))).toBe(0);
    expect(c.err()).toMatch(SUMMARY);
  }, 120_000);

  test('cluster measure - NATS restarted while the workers measure: everyone reconnects, the file is the local run\'s', async () => {
    const slow = { ARROWQUANT_KERNEL: 'reference' };
    const local = await localSearchRun();
    const ws = [worker(FIXTURE_MODELS, slow), worker(FIXTURE_MODELS, slow)];
    await Promise.all(ws.map((w) => w.waitFor(/ready/)));
    const out = join(dir, 'nats-restart.arrow');
    const c = coordinator(out, ['--refine', 'search', '--cache-dir', join(dir, 'nats-restart-cache')]);
    await Promise.race(ws.map((w) => w.waitFor(/: measured layer/)));
    await nats.restart();
    expect(await c.exited, c.err()).toBe(0);
    expect(Buffer.compare(readFileSync(out), readFileSync(local))).toBe(0);
    expect(c.err()).toMatch(SUMMARY);
    expect(ws.some((w) => /NATS (disconnect|reconnect)/.test(w.err()))).toBe(true);
  }, 120_000);

  test(`cluster measure - a worker that cannot read the model refuses the measure task: the job fails naming the layer`, async () => {
    const w = worker(emptyRoot);
    await w.waitFor(/ready/);
    const c = coordinator(join(dir, 'refused.arrow'), ['--cache-dir', join(dir, 'refused-cache')]);
    expect(await c.exited).toBe(1);
    expect(c.err()).toMatch(/refused the measurement of layer \d+ \([^)]+\), group size \d+, v[12], of job \w+: \S+ is not under its model roots; a measurement reads the model file in place/);
    expect(w.err()).toMatch(/refused the measurement of layer \d+/);
    const st = await runCli(['status', '--nats', nats.url, '--json']);
    expect(st.code, st.stderr).toBe(0);
    expect(JSON.parse(st.stdout).jobs.find((j: { output: string }) => j.output.endsWith('refused.arrow'))).toMatchObject({ state: 'failed' });
  }, 60_000);


  test('cluster measure - hostile: malformed measure tasks are refused by the worker, which stays up; an unreadable result left by a run is asked again, one written for this run fails the job naming the key', async () => {
    const w = worker();
    await w.waitFor(/ready/);
    const job = prepareJob(BF16, resolveConfig({ enable_mixed_precision: true, allocation_strategy: 'measured', target_model_size_mb: 0.22 }), join(dir, 'forged.arrow'));
    const task = { ...job.tasks[2]!, group_size: 32 as const };
    const good = { task, widths: [2, 4, 8], measure_id: measureId(task, [2, 4, 8]), run_id: 'ab'.repeat(8) };
    const nc = await connect({ servers: nats.url });
    const js = nc.jetstream();
    const forged = [
      new TextEncoder().encode('{not json'),
      encodeMessage({ ...good, widths: [8, 4] }),
      encodeMessage({ ...good, widths: [] }),
      encodeMessage({ ...good, coordinator: '127.0.0.1:1' }),
      encodeMessage({ ...good, task: { ...task, byte_length: -1 } }),
    ];
    for (const data of forged) await js.publish(measureSubject('forgedjob'), data);
    await w.waitFor(/refusing a malformed task/, forged.length);
    expect(w.err()).toMatch(/message on aq\.tasks\.forgedjob\.measure: not valid JSON/);
    expect(w.err()).toMatch(/message on aq\.tasks\.forgedjob\.measure: widths: widths must be ascending and distinct/);
    expect(w.err()).toMatch(/message on aq\.tasks\.forgedjob\.measure: widths: Too small: expected array to have >=1 items/);
    expect(w.err()).toMatch(/message on aq\.tasks\.forgedjob\.measure: message: Unrecognized key: "coordinator"/);
    expect(w.err()).toMatch(/message on aq\.tasks\.forgedjob\.measure: task\.byte_length: Too small: expected number to be >=0/);
    expect(w.err()).not.toMatch(/: measured layer/);

    await stopAll([w]);
    expect(w.err()).toMatch(/stopped after 0 layers/);

    // A result left in the job state that is not one is removed and asked again; one written
    // in answer to this run's task fails the job naming the key.
    const key = measureKey(job.id, 2, 'v1', 32);
    const bad = encodeMessage({ measure_id: good.measure_id, worker: 'mallory', stats: [{ bits: 2, w2: 1, e2: -1, wq: 0, q2: 0 }] });
    const kv = await jobsBucket(nc);
    await kv.put(key, bad);
    const c = coordinator(join(dir, 'forged.arrow'), ['--cache-dir', join(dir, 'forged-cache')]);
    await c.waitFor(/ignoring an unreadable measurement of layer 2 .* left in the job state .*stats\.0\.e2: Too small: expected number to be >=0\); measuring it again/);
    await kv.put(key, bad);
    await nc.close();
    expect(await c.exited).toBe(2);
    expect(c.err()).toContain(`measurement of layer 2 (${task.name}) at group size 32, v1: message on job state ${key}: stats.0.e2: Too small: expected number to be >=0`);
  }, 60_000);

  test('cluster measure - a measure task that fails every delivery (its worker may not write results): the job fails naming the layer', async () => {
    // The documented accounts, less the worker's right to write measurement results.
    const PASS = { AQ_COORDINATOR_PASSWORD: 'coord-pw-5d1e', AQ_WORKER_PASSWORD: 'worker-pw-77a0' };
    Object.assign(process.env, PASS); // nats-server reads $AQ_*_PASSWORD from its environment
    const conf = readFileSync(join(ROOT, 'docs', 'nats-permissions.conf'), 'utf8');
    expect(conf).toContain('"$KV.aq-jobs.*.measure.>", ');
    const denied = await startNatsServer({ config: conf.replace('"$KV.aq-jobs.*.measure.>", ', '') });
    const env = { ...ENV, ARROW_QUANT_TASK_MAX_DELIVER: '2' };
    const as = (user: 'coordinator' | 'worker') => ({
      ...env, ARROW_QUANT_NATS_USER: `aq-${user}`, ARROW_QUANT_NATS_PASSWORD: user === 'worker' ? PASS.AQ_WORKER_PASSWORD : PASS.AQ_COORDINATOR_PASSWORD,
    });
    try {
      // the stream, consumer and buckets exist before the worker (whose user may not create them) starts
      const nc = await connect({ servers: denied.url, user: 'aq-coordinator', pass: PASS.AQ_COORDINATOR_PASSWORD });
      await ensureTaskQueue(nc, { ackWaitMs: 2000, maxDeliver: 2 });
      await jobsBucket(nc);
      await workersBucket(nc);
      await nc.close();
      const w = startCli(['worker', '--nats', denied.url, '--concurrency', '1', '--threads', '1', '--model-root', FIXTURE_MODELS, '--grace', '5'], as('worker'));
      procs.push(w);
      await w.waitFor(/ready/);
      const c = startCli(['quantize', BF16, '-o', join(dir, 'denied.arrow'), '--nats', denied.url, '--listen', '127.0.0.1:0', ...MEASURED, '--cache-dir', join(dir, 'denied-cache')], as('coordinator'));
      procs.push(c);
      expect(await c.exited).toBe(1);
      expect(c.err()).toMatch(/measuring layer \d+ \([^)]+\) at group size \d+, v[12] failed 2 deliveries \(the last: 'Permissions Violation for Publish to "\$KV\.aq-jobs\.\w+\.measure\.\d+\.v[12]\.\d+"'\); see the workers' logs/);
      expect(w.err()).toMatch(/failed the measurement of layer \d+ .*\(will be redelivered\)/);
      expect(w.err()).not.toMatch(/: measured layer/);
    } finally {
      await stopAll(procs);
      procs = [];
      await denied.stop();
    }
  }, 90_000);
});
