// Cluster mode against hostile input and faults (issue 10): a task is untrusted input, and
// nothing waits forever. Real nats-server, real worker and coordinator processes.
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { connect, type NatsConnection } from 'nats';
import { resolveConfig } from '../core/config/load.js';
import { prepareJob } from '../coordinator/job.js';
import { decodeMessage, encodeMessage, workerEventSchema, MAX_EVENT_TEXT, type WorkerEvent } from '../core/cluster/messages.js';
import { MalformedMessageError } from '../core/cluster/errors.js';
import { taskSubject } from '../core/cluster/names.js';
import { checkOwnTasks } from '../coordinator/cluster/task-check.js';
import { ShardClient } from '../worker/cluster/shard-client.js';
import { ShardTransferError } from '../core/grpc/errors.js';
import { generateTestCerts, type TestCerts } from './helpers/certs.js';
import { startNatsServer, type NatsTestServer } from './helpers/nats-server.js';
import { startCli, stopAll, type Proc } from './helpers/processes.js';
import { FIXTURE_MODELS, ROOT, runCli } from './helpers/cli.js';
import { tempDir } from './helpers/models.js';
import { holdJob, taskMessage } from './helpers/job-holder.js';
import { fuzzTaskMessages } from './helpers/task-fuzz.js';

const { dir, cleanup } = tempDir('aq-hostile-');
const ENV = { ARROW_QUANT_TASK_ACK_WAIT_MS: '2000', ARROW_QUANT_TASK_MAX_DELIVER: '20', ARROW_QUANT_JOB_LEASE_MS: '4000' };
const BF16 = join(FIXTURE_MODELS, 'stories260K-bf16.safetensors');
const F32 = join(FIXTURE_MODELS, 'stories260K-f32.safetensors');

let nats: NatsTestServer;
let procs: Proc[] = [];
let localBf16: Buffer;

beforeAll(async () => {
  nats = await startNatsServer();
  const local = join(dir, 'local-bf16.arrow');
  expect((await runCli(['quantize', BF16, '-o', local])).code).toBe(0);
  localBf16 = readFileSync(local);
});

afterEach(async () => {
  await stopAll(procs);
  procs = [];
});

afterAll(async () => {
  await nats?.stop();
  cleanup();
});

function worker(args: string[] = [], env: NodeJS.ProcessEnv = {}, url = nats.url): Proc {
  const p = startCli(['worker', '--nats', url, '--threads', '1', '--model-root', FIXTURE_MODELS, '--grace', '2', ...args], { ...ENV, ...env });
  procs.push(p);
  return p;
}

function coordinator(model: string, out: string, args: string[] = [], url = nats.url): Proc {
  const p = startCli(['quantize', model, '-o', out, '--nats', url, '--listen', '127.0.0.1:0', '--json', ...args], ENV);
  procs.push(p);
  return p;
}

const shardsAddress = async (c: Proc) => /shards to (\S+)/.exec((await c.waitFor(/shards to \S+/))[0]!)![1]!;

describe('cluster hostile', () => {
  test('cluster hostile - 1,000 seeded malformed tasks: the worker refuses or drops each, stays up, then serves a real job byte-identically', async () => {
    const work = join(dir, 'work');
    const root = join(dir, 'fifo-root');
    mkdirSync(root);
    const fifo = join(root, 'fuzz-1.fifo');
    execFileSync('mkfifo', [fifo]);
    const w = worker(['--work-dir', work, '--model-root', root]);
    await w.waitFor(/ready/);
    const nc: NatsConnection = await connect({ servers: nats.url });
    try {
      await holdJob(nc, 'fuzzheld', '127.0.0.1:9');
      await holdJob(nc, 'fuzzremote', '203.0.113.5:5000');
      const events: WorkerEvent[] = [];
      let largestEvent = 0;
      const sub = nc.subscribe('aq.events.*', {
        callback: (_e, m) => {
          largestEvent = Math.max(largestEvent, m.data.byteLength);
          events.push(decodeMessage(workerEventSchema, m.data, m.subject));
        },
      });
      const real = prepareJob(BF16, resolveConfig({}), join(dir, 'unused.arrow')).tasks[0]!;
      const base = taskMessage({ ...real, file: join(FIXTURE_MODELS, 'stories260K-bf16.safetensors') }, 'fuzzheld', '127.0.0.1:9');
      const messages = fuzzTaskMessages({ held: base, remoteJobId: 'fuzzremote', fifo }, 1000, 20261201);
      const js = nc.jetstream();
      for (const m of messages) await js.publish(m.subject, m.data);
      const outcome = /^worker \S+: (refusing a malformed task|dropped layer|refused layer)/;
      await w.waitFor(outcome, 1000, 120_000);
      await nc.flush();
      sub.unsubscribe();
      const log = w.err();
      expect(log.match(new RegExp(outcome.source, 'gm'))!.length).toBe(1000);
      expect(log).not.toMatch(/uploaded layer|failed layer|Error:|at .*\.js:\d+/);
      // the specific defects of the issue, each refused with its reason
      expect(log).toMatch(/refused layer 0 \(.+\) of job fuzzheld: shape \[2147483648, 2147483648\] × BF16 is \d+ bytes but the task says byte_length 128/);
      expect(log).toMatch(/refused layer 0 \(.+\): .*fuzz-\d+\.fifo is not a regular file/);
      expect(log).toMatch(/refused layer 0 \(.+\) of job fuzzremote: coordinator 203\.0\.113\.5:5000 is not an allowed coordinator host \(localhost, 127\.0\.0\.1, ::1; see --allow-coordinator\)/);
      expect(log).toMatch(/refusing a malformed task: message on aq\.tasks\.fuzz: task\.job_id: a job id is 1-64 characters from A-Z a-z 0-9 _ -/);
      expect(log).toMatch(/refusing a malformed task: message on aq\.tasks\.fuzz: task\.name: Too big: expected string to have <=65536 characters/);
      expect(log).toMatch(/refusing a malformed task: message on aq\.tasks\.fuzz: task\.shape: Too big: expected array to have <=64 items/);
      expect(log).toMatch(/dropped layer 0 \(.+\) of job nobody\d+: no coordinator holds the job/);
      // refusals of held jobs reach their coordinator, each event small whatever the task held
      expect(events.filter((e) => e.type === 'task_refused' && e.job_id === 'fuzzheld').length).toBeGreaterThan(100);
      expect(largestEvent).toBeLessThan(4 * MAX_EVENT_TEXT + 4096);
      // nothing was written outside the work dir (a job id is never a path)
      expect(readdirSync(dir).filter((f) => /pwned|etc/.test(f))).toEqual([]);
      // the same worker process then serves a real job
      const out = join(dir, 'after-fuzz.arrow');
      const c = coordinator(BF16, out);
      expect(await c.exited, c.err()).toBe(0);
      expect(Buffer.compare(readFileSync(out), localBf16)).toBe(0);
      expect(w.child.exitCode).toBeNull();
    } finally {
      await nc.close();
    }
  }, 240_000);

  test('cluster hostile - a model file swapped for a FIFO right after the worker first checks it: no open blocks, the worker then serves a real job', async () => {
    const root = join(dir, 'swap-root');
    mkdirSync(root);
    const swapped = join(root, 'swap.safetensors');
    copyFileSync(BF16, swapped);
    const fifo = join(dir, 'swap.fifo');
    execFileSync('mkfifo', [fifo]);
    const w = worker(['--model-root', root], {
      NODE_OPTIONS: `--require ${join(ROOT, 'test', 'helpers', 'fifo-swap-preload.cjs')}`,
      AQ_TEST_SWAP_MATCH: 'swap-root/swap\\.safetensors$',
      AQ_TEST_SWAP_FIFO: fifo,
    });
    await w.waitFor(/ready/);
    const nc: NatsConnection = await connect({ servers: nats.url });
    try {
      await holdJob(nc, 'swapheld', '127.0.0.1:9');
      const real = prepareJob(swapped, resolveConfig({}), join(dir, 'unused-swap.arrow')).tasks[0]!;
      await nc.jetstream().publish(taskSubject('swapheld'), encodeMessage(taskMessage(real, 'swapheld', '127.0.0.1:9')));
      // refused or failed, never opened blocking (before: the thread's open waited forever for a writer)
      await w.waitFor(/layer 0 \(.+\) of job swapheld: .*swap\.safetensors is not a regular file/, 1, 20_000);
      expect(existsSync(fifo)).toBe(false);
      const out = join(dir, 'after-swap.arrow');
      const c = coordinator(BF16, out);
      expect(await c.exited, c.err()).toBe(0);
      expect(Buffer.compare(readFileSync(out), localBf16)).toBe(0);
    } finally {
      await nc.close();
    }
  }, 120_000);

  test('cluster hostile - a task cannot weaken TLS, downloads need --allow-download on both sides, a live job cannot be claimed twice', async () => {
    const certs: TestCerts = await generateTestCerts();
    try {
      const out = join(dir, 'held.arrow');
      const c = coordinator(BF16, out, ['--bits', '8']);
      const address = await shardsAddress(c);
      const jobId = (await c.waitFor(/job \w+: \d+ layers/))[0]!.split(' ')[1]!.replace(':', '');
      // a second coordinator of the same job (another output) exits 2 at once, naming the holder
      const t0 = Date.now();
      const second = await runCli(['quantize', BF16, '-o', join(dir, 'other.arrow'), '--bits', '8', '--nats', nats.url, '--listen', '127.0.0.1:0'], { env: ENV });
      expect(second.code, second.stderr).toBe(2);
      expect(second.stderr).toMatch(new RegExp(`job ${jobId} is held by \\S+ pid ${c.pid} at ${address.replace(/\./g, '\\.')} \\(run [0-9a-f]{16}, writing .*held\\.arrow\\); its lease was renewed \\d+\\.\\d s ago`));
      expect(Date.now() - t0).toBeLessThan(15_000);
      // the coordinator was not started with --allow-download: its source weights stay put
      const client = new ShardClient(address, null);
      const denied = await client.download(jobId, 0, join(dir, 'stolen.bin')).catch((e: unknown) => e);
      client.close();
      expect(denied).toBeInstanceOf(ShardTransferError);
      expect((denied as Error).message).toMatch(/PERMISSION_DENIED: download of layer 0 of job "\w+": the job was not started with --allow-download/);
      expect(existsSync(join(dir, 'stolen.bin'))).toBe(false);
      // a worker configured for TLS uploads with TLS although the task says tls: false: it cannot reach a plaintext coordinator
      const w = worker(['--grpc-tls-ca', certs.ca.certFile]);
      await w.waitFor(/upload of layer \d+ of job \w+ failed \(.*UNAVAILABLE/);
      expect(w.err()).not.toMatch(/uploaded layer/);
      expect((await runCli(['cancel', jobId, '--nats', nats.url])).code).toBe(0);
      expect(await c.exited).toBe(130);
      // a job that allows downloads, a worker that does not: refused with the reason, the job fails
      const empty = join(dir, 'empty-root');
      mkdirSync(empty);
      const w2 = startCli(['worker', '--nats', nats.url, '--threads', '1', '--model-root', empty], ENV);
      procs.push(w2);
      await w2.waitFor(/ready/);
      const c2 = coordinator(BF16, join(dir, 'dl.arrow'), ['--allow-download', '--bits', '4', '--group-size', '64']);
      expect(await c2.exited, c2.err()).toBe(1);
      expect(c2.err()).toMatch(/refused layer \d+ \(.+\) of job \w+: .*stories260K-bf16\.safetensors is not under its model roots \(.*empty-root\) and this worker was not started with --allow-download/);
    } finally {
      await certs.cleanup();
    }
  }, 120_000);

  test('cluster hostile - two concurrent jobs on one worker both finish with the local bytes', async () => {
    const local8 = join(dir, 'local8.arrow');
    expect((await runCli(['quantize', BF16, '-o', local8, '--bits', '8'])).code).toBe(0);
    const w = worker(['--concurrency', '2']);
    await w.waitFor(/ready/);
    const a = coordinator(BF16, join(dir, 'concurrent-a.arrow'), ['--bits', '8']);
    await a.waitFor(/shards to/);
    const b = coordinator(BF16, join(dir, 'concurrent-b.arrow'));
    expect(await a.exited, a.err()).toBe(0);
    expect(await b.exited, b.err()).toBe(0);
    expect(Buffer.compare(readFileSync(join(dir, 'concurrent-a.arrow')), readFileSync(local8))).toBe(0);
    expect(Buffer.compare(readFileSync(join(dir, 'concurrent-b.arrow')), localBf16)).toBe(0);
    // the worker's default work dir goes with it
    const workDir = join(tmpdir(), `arrowquant-worker-${w.pid}`);
    expect(existsSync(workDir)).toBe(true);
    w.signal('SIGTERM');
    expect(await w.exited).toBe(0);
    expect(existsSync(workDir)).toBe(false);
  }, 120_000);

  test('cluster hostile - SIGTERM while NATS is down: worker and coordinator exit within grace + 5 s', async () => {
    const own = await startNatsServer();
    try {
      const w = worker(['--health-listen', '127.0.0.1:0'], { ARROWQUANT_KERNEL: 'reference' }, own.url);
      await w.waitFor(/ready/);
      const healthAt = /health service on (\S+)/.exec((await w.waitFor(/health service on \S+/))[0]!)![1]!;
      const probe = new ShardClient(healthAt, null);
      expect(await probe.health()).toBe('SERVING');
      const out = join(dir, 'nats-down.arrow');
      const c = coordinator(F32, out, ['--refine', 'search'], own.url);
      await w.waitFor(/uploaded layer/);
      await own.stop();
      await w.waitFor(/NATS disconnect/);
      expect(await probe.health()).toBe('NOT_SERVING'); // health follows the NATS connection
      probe.close();
      const t0 = Date.now();
      w.signal('SIGTERM');
      c.signal('SIGTERM');
      const [wExit, cExit] = await Promise.all([w.exited.then((x) => [x, Date.now() - t0] as const), c.exited.then((x) => [x, Date.now() - t0] as const)]);
      expect(wExit[1], w.err()).toBeLessThan(2_000 + 5_000);
      expect(existsSync(join(tmpdir(), `arrowquant-worker-${w.pid}`)), w.err()).toBe(false); // the default work dir goes even then
      expect(cExit[1], c.err()).toBeLessThan(5_000 + 1_000);
      expect(cExit[0]).toBe(130);
      expect(c.err()).toMatch(/was cancelled/);
      expect(existsSync(out)).toBe(false);
      expect(readdirSync(dir).filter((f) => f.startsWith('nats-down.arrow.tmp'))).toEqual([]);
    } finally {
      await own.stop();
    }
  }, 120_000);

  test('cluster hostile - status and cancel refuse what is not a job id (exit 2)', async () => {
    for (const cmd of ['cancel', 'status']) {
      const r = await runCli([cmd, '../pwned', '--nats', nats.url]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(new RegExp(`arrowquant ${cmd}: "\\.\\./pwned" is not a job id \\(1-64 characters from A-Z a-z 0-9 _ -\\)`));
    }
  });

  test('cluster hostile - a forged task_refused event is ignored; a job with no workers fails on the stall timeout saying why', async () => {
    const out = join(dir, 'forged.arrow');
    const c = coordinator(BF16, out, ['--stall-timeout', '3', '--listen', '0.0.0.0:0', '--advertise', '127.0.0.1:0']);
    const jobId = (await c.waitFor(/job \w+: \d+ layers/))[0]!.split(' ')[1]!.replace(':', '');
    const nc = await connect({ servers: nats.url });
    const forged: WorkerEvent = { type: 'task_refused', job_id: jobId, layer_index: 0, name: 'model.embed_tokens.weight', worker_id: 'mallory', reason: 'FORGED-REASON' };
    nc.publish(`aq.events.${jobId}`, encodeMessage(forged));
    await nc.flush();
    await nc.close();
    await c.waitFor(/ignoring a task_refused event for layer 0 that the job state does not confirm/);
    expect(await c.exited).toBe(1);
    expect(c.err()).toMatch(new RegExp(`job ${jobId} made no progress for \\d+ s \\(0/48 layers staged\\): no live workers \\(none has a heartbeat in the aq-workers bucket\\)`));
    expect(c.err()).not.toMatch(/FORGED-REASON|mallory/);
    // listening beyond loopback in plaintext is said
    expect(c.err()).toMatch(/warning: shard transfer listens on 0\.0\.0\.0:0 in plaintext: shards cross the network unencrypted/);
    expect(existsSync(out)).toBe(false);
  });

  test('cluster hostile - a layer that cannot travel as a task fails the coordinator at once (exit 2), 17 dimensions can', () => {
    const job = prepareJob(BF16, resolveConfig({}), join(dir, 'dims.arrow'));
    const t = job.tasks[0]!;
    job.tasks[0] = { ...t, shape: [...Array(16).fill(1), t.shape[0]! * t.shape[1]!] };
    expect(() => checkOwnTasks(job, '0123456789abcdef')).not.toThrow();
    job.tasks[0] = { ...t, shape: Array(65).fill(1) };
    expect(() => checkOwnTasks(job, '0123456789abcdef')).toThrow(MalformedMessageError);
    expect(() => checkOwnTasks(job, '0123456789abcdef')).toThrow(/layer 0 \(model\.embed_tokens\.weight\) cannot be sent to cluster workers: task\.shape: Too big: expected array to have <=64 items \(quantize it locally, without --nats\)/);
    job.tasks[0] = { ...t, name: 'w'.repeat(60_000), notes: ['n'.repeat(1_100_000)] };
    expect(() => checkOwnTasks(job, '0123456789abcdef', 1024 * 1024)).toThrow(/its task is \d+ bytes, over the NATS server's max_payload of 1048576/);
  });
});
