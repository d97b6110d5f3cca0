// The coordinator service and its job API on host processes: a real nats-server, real worker and
// coordinator processes, `arrowquant submit/watch/status/cancel` as a user runs them.
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { resolveConfig } from '../core/config/load.js';
import { runLocalJob } from '../coordinator/local-run.js';
import { writeSafetensors } from '../core/model/safetensors-writer.js';
import { syntheticLlamaTensors } from '../core/model/synthetic-llama.js';
import { startCli, type Proc } from './helpers/processes.js';
import { FIXTURE_MODELS, runCli } from './helpers/cli.js';
import { writeSlowModel } from './helpers/models.js';
import { clusterFixture } from './helpers/cluster-fixture.js';
import { generateTestCerts } from './helpers/certs.js';
import { credentials } from '@grpc/grpc-js';
import { grpcServices } from '../core/grpc/proto.js';

const cluster = clusterFixture('aq-jobapi-', 2);
const { dir, modelsDir } = cluster;
const ENV = { ARROW_QUANT_TASK_ACK_WAIT_MS: '2000', ARROW_QUANT_TASK_MAX_DELIVER: '20' };
const BF16 = join(FIXTURE_MODELS, 'stories260K-bf16.safetensors');
const MIXED = ['--mixed-precision', '--target-size-mb', '0.22'];
const TOKEN = 'test-token-0123456789';
const tokenFile = join(dir, 'token');

let slowModel: string;
/** four times the work per layer of slowModel: a job on it is still running seconds after its first layer */
let slowerModel: string;
let slowLocal: Buffer;
let bf16Local: Buffer;

beforeAll(async () => {
  writeFileSync(tokenFile, `${TOKEN}\n`);
  // With the TypeScript reference kernel and the clipping search a layer of this model takes a
  // while on a worker: cancels and kills land in the middle of the job.
  ({ model: slowModel, local: slowLocal } = await writeSlowModel(dir, modelsDir, 2));
  slowerModel = join(modelsDir, 'slower.safetensors');
  await writeSafetensors(slowerModel, syntheticLlamaTensors({ hidden: 512, intermediate: 1376, layers: 2, vocab: 512, heads: 8, kvHeads: 8 }, 'BF16', 12));
  const local = join(dir, 'bf16-local.arrow');
  // the same configuration as the MIXED flags give
  await runLocalJob(BF16, { output: local, config: resolveConfig({ enable_mixed_precision: true, target_model_size_mb: 0.22 }) });
  bf16Local = readFileSync(local);
});

function worker(env: NodeJS.ProcessEnv = {}): Proc {
  return cluster.worker([], { ...ENV, ...env });
}

/** A coordinator service; resolves with its job API address once it listens. */
async function coordinator(data: string, args: string[] = []): Promise<{ proc: Proc; address: string; metrics?: string }> {
  // The data directory's name is the service's name: each test's jobs are its own.
  const proc = cluster.start(['coordinator', '--name', basename(data), '--nats', cluster.nats.url, '--listen', '127.0.0.1:0', '--shard-listen', '127.0.0.1:0', '--data', data,
    '--model-root', FIXTURE_MODELS, '--model-root', modelsDir, '--auth-token-file', tokenFile, '--grace', '2', ...args], ENV);
  const line = (await proc.waitFor(/job API listening on [\d.]+:\d+/))[0]!;
  const metrics = /metrics on http:\/\/([\d.]+:\d+)/.exec(proc.err())?.[1];
  return { proc, address: /[\d.]+:\d+$/.exec(line)![0], metrics };
}

const client = (address: string) => ['--coordinator', address, '--auth-token-file', tokenFile];

async function statusJson(address: string, job?: string) {
  const r = await runCli(['status', ...(job ? [job] : []), ...client(address), '--json']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as { workers: { id: string; kernel: string; threads: number }[]; jobs: { job_id: string; state: string; started_at: string; finished_at: string; result: { exit_code: number } | null; progress: { layers_done: number; layers_total: number }; layers: { layer_index: number; bits: number; worker: string }[] }[] };
}

describe('job api', () => {
  test(`job api - submit and watch: the output is the local run's bytes; JSON events and metrics count the job`, async () => {
    const data = join(dir, 'd1');
    const w = worker();
    await w.waitFor(/ready/);
    const c = await coordinator(data, ['--metrics-listen', '127.0.0.1:0', '--log-format', 'json']);
    const r = await runCli(['submit', BF16, '-o', 'a.arrow', ...client(c.address), '--json', ...MIXED]);
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(join(data, 'out', 'a.arrow')).equals(bf16Local)).toBe(true);
    const events = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(events[0].job.state).toMatch(/queued|running/);
    const last = events[events.length - 1];
    expect(last).toMatchObject({ final: true, job: { state: 'done', result: { exit_code: 0 }, progress: { layers_done: 48, layers_total: 48 } } });
    expect(JSON.parse(last.job.result.summary_json)).toMatchObject({ mode: 'cluster', layers: 48, bytes_out: 217760 });
    const text = await (await fetch(`http://${c.metrics}/metrics`)).text();
    expect(text).toMatch(/^arrowquant_coordinator_layers_done_total 48$/m);
    expect(text).toMatch(/^arrowquant_coordinator_bytes_out_total 217760$/m);
    expect(text).toMatch(/^arrowquant_coordinator_jobs\{state="done"\} 1$/m);
    expect(text).toMatch(/^arrowquant_coordinator_queue_depth 0$/m);
    // every layer's publish-to-staged time observed once; no upload left in flight
    expect(text).toMatch(/^arrowquant_coordinator_layer_duration_seconds_count 48$/m);
    expect(Number(/^arrowquant_coordinator_layer_duration_seconds_sum (\S+)$/m.exec(text)![1])).toBeGreaterThan(0);
    expect(text).toMatch(/^arrowquant_coordinator_uploads_in_flight 0$/m);
    // --log-format json: one object a line
    const logLine = c.proc.err().split('\n').find((l) => l.includes('job done'))!;
    expect(JSON.parse(logLine)).toMatchObject({ level: 'info', msg: expect.stringContaining('job done: wrote'), job: last.job.job_id });
    // A job that breaks its quality bar exits 3, as a local quantize would, and writes nothing.
    const cfg = join(dir, 'bar.yaml');
    writeFileSync(cfg, 'min_layer_cosine: {2: 0.96}\n');
    const bar = await runCli(['submit', BF16, '-o', 'bar.arrow', ...client(c.address), '--bits', '2', '--fail-fast', '-c', cfg]);
    expect(bar.code, bar.stderr).toBe(3);
    expect(bar.stderr).toMatch(/job \w+ failed: .*cosine 0\.\d{4} at 2 bits is below min_layer_cosine 0\.96 \(fail_fast\)/);
    expect(existsSync(join(data, 'out', 'bar.arrow'))).toBe(false);
  });

  test('job api - a model outside --model-root, an output outside the output root and a wrong token are refused (exit 2)', async () => {
    const c = await coordinator(join(dir, 'd2'));
    const wrong = join(dir, 'wrong-token');
    writeFileSync(wrong, 'not-the-token');
    // independent refusals, run side by side
    const [outside, dotdot, out, badCfg, denied, none, unknown] = await Promise.all([
      runCli(['submit', join(dir, 'slow-local.arrow'), '-o', 'x.arrow', ...client(c.address)]),
      runCli(['submit', join(modelsDir, '..', 'slow-local.arrow'), '-o', 'x.arrow', ...client(c.address)]),
      runCli(['submit', BF16, '-o', '../../escape.arrow', ...client(c.address)]),
      runCli(['submit', BF16, '-o', 'x.arrow', ...client(c.address), '--target-size-mb', '0.0001', '--mixed-precision']),
      runCli(['submit', BF16, '-o', 'x.arrow', '--coordinator', c.address, '--auth-token-file', wrong]),
      runCli(['status', '--coordinator', c.address], { env: { ARROW_QUANT_COORDINATOR_TOKEN: '' } }),
      runCli(['watch', 'nosuchjob', ...client(c.address)]),
    ]);
    expect(outside.code).toBe(2);
    expect(outside.stderr).toMatch(/INVALID_ARGUMENT: model ".*slow-local\.arrow" is outside the coordinator's model roots; allowed: paths under /);
    expect(dotdot.code).toBe(2);
    expect(dotdot.stderr).toMatch(/is outside the coordinator's model roots/);
    expect(out.code).toBe(2);
    expect(out.stderr).toMatch(/INVALID_ARGUMENT: output "\.\.\/\.\.\/escape\.arrow" is outside the coordinator's output root/);
    expect(badCfg.code).toBe(2);
    expect(badCfg.stderr).toMatch(/Submit at [\d.]+:\d+: INVALID_ARGUMENT: target_model_size_mb 0\.0001 \(100 bytes\) cannot be met/);
    expect(denied.code).toBe(2);
    expect(denied.stderr).toMatch(/UNAUTHENTICATED: the bearer token is not valid/);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/UNAUTHENTICATED: missing "authorization: Bearer <token>" metadata/);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/NOT_FOUND: no job nosuchjob on this coordinator/);
    expect(readdirSync(join(dir, 'd2', 'out'))).toEqual([]);
    // The health service answers without a token (for probes).
    const { Client } = grpcServices().health;
    const hc = new Client(c.address, credentials.createInsecure());
    const check = (service: string) => new Promise<string>((resolve, reject) => hc.Check({ service }, { deadline: Date.now() + 10_000 }, (e, r) => (e ? reject(e) : resolve(r!.status))));
    expect(await check('')).toBe('SERVING');
    expect(await check('arrowquant.v1.Jobs')).toBe('SERVING');
    hc.close();
    const ok = await runCli(['status', ...client(c.address), '--json']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout).jobs).toEqual([]);
  });

  test('job api - mutual TLS: a client with a certificate of the CA is served, one without is refused', async () => {
    const certs = await generateTestCerts();
    try {
      const c = await coordinator(join(dir, 'd6'), ['--grpc-tls-cert', certs.server.certFile, '--grpc-tls-key', certs.server.keyFile, '--grpc-tls-client-ca', certs.ca.certFile]);
      const address = c.address.replace('127.0.0.1', 'localhost');
      const withCert = await runCli(['status', ...client(address), '--grpc-tls-ca', certs.ca.certFile, '--grpc-tls-cert', certs.client.certFile, '--grpc-tls-key', certs.client.keyFile, '--json']);
      expect(withCert.code, withCert.stderr).toBe(0);
      expect(JSON.parse(withCert.stdout)).toMatchObject({ jobs: [] });
      const noCert = await runCli(['status', ...client(address), '--grpc-tls-ca', certs.ca.certFile]);
      expect(noCert.code).toBe(1);
      expect(noCert.stderr).toMatch(/List at localhost:\d+: UNAVAILABLE/);
    } finally {
      await certs.cleanup();
    }
  });

  test('job api - --detach then status, two followers of the same job; two jobs queued run in turn', async () => {
    const data = join(dir, 'd3');
    const w = worker();
    await w.waitFor(/ready/);
    const c = await coordinator(data);
    const a = await runCli(['submit', BF16, '-o', 'q1.arrow', ...client(c.address), '--detach', ...MIXED]);
    const b = await runCli(['submit', BF16, '-o', 'q2.arrow', ...client(c.address), '--detach', '--bits', '8']);
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    const [idA, idB] = [a.stdout.trim(), b.stdout.trim()];
    expect(idA).toMatch(/^[A-Za-z0-9_-]+$/);
    const st = await statusJson(c.address);
    expect(st.jobs.map((j) => j.job_id)).toEqual([idA, idB]);
    expect(st.workers.some((x) => x.threads === 1)).toBe(true);
    const [f1, f2, f3] = await Promise.all([
      runCli(['submit', '--follow', idA, ...client(c.address)]),
      runCli(['watch', idA, ...client(c.address), '--json']),
      runCli(['watch', idB, ...client(c.address)]),
    ]);
    expect([f1.code, f2.code, f3.code], f1.stderr + f3.stderr).toEqual([0, 0, 0]);
    expect(f1.stderr).toMatch(/wrote .*q1\.arrow/);
    expect(readFileSync(join(data, 'out', 'q1.arrow')).equals(bf16Local)).toBe(true);
    const done = await statusJson(c.address);
    const [ja, jb] = [done.jobs.find((j) => j.job_id === idA)!, done.jobs.find((j) => j.job_id === idB)!];
    expect([ja.state, jb.state]).toEqual(['done', 'done']);
    expect(Date.parse(jb.started_at)).toBeGreaterThanOrEqual(Date.parse(ja.finished_at));
    const one = await statusJson(c.address, idB);
    expect(one.jobs).toHaveLength(1);
    expect(one.jobs[0]).toMatchObject({ job_id: idB, state: 'done', result: { exit_code: 0 } });
  });

  test('job api - cancel mid-job (cancel --coordinator, or SIGINT to submit): workers drop it, exit 130, nothing written at the output', async () => {
    const data = join(dir, 'd4');
    const w = worker({ ARROWQUANT_KERNEL: 'reference' });
    await w.waitFor(/ready/);
    const c = await coordinator(data);
    const sub = startCli(['submit', slowerModel, '-o', 'cancelled.arrow', ...client(c.address), '--refine', 'search', '--bits', '8'], ENV);
    cluster.procs.push(sub);
    const id = /job (\w+) submitted/.exec((await sub.waitFor(/job \w+ submitted/))[0]!)![1]!;
    await c.proc.waitFor(/layer 1\/\d+ staged/);
    // status JOB: the running job with its layers staged so far
    const running = (await statusJson(c.address, id)).jobs[0]!;
    expect(running).toMatchObject({ job_id: id, state: 'running' });
    expect(running.layers.length).toBeGreaterThanOrEqual(1);
    expect(running.layers[0]).toMatchObject({ bits: 8, worker: expect.stringMatching(/\S/) });
    const cancel = await runCli(['cancel', id, ...client(c.address)]);
    expect(cancel.code, cancel.stderr).toBe(0);
    expect(cancel.stderr).toMatch(new RegExp(`job ${id}: cancelled`));
    expect(await sub.exited).toBe(130);
    await w.waitFor(/cancelled/);
    expect(existsSync(join(data, 'out', 'cancelled.arrow'))).toBe(false);
    expect(readdirSync(join(data, 'out'))).toEqual([]);
    expect(readdirSync(join(data, 'stage'))).toEqual([]);
    // SIGINT to a following submit cancels its job, as it would a local quantize.
    const sigint = startCli(['submit', slowerModel, '-o', 'interrupted.arrow', ...client(c.address), '--refine', 'search', '--bits', '8'], ENV);
    cluster.procs.push(sigint);
    const id2 = /job (\w+) submitted/.exec((await sigint.waitFor(/job \w+ submitted/))[0]!)![1]!;
    await c.proc.waitFor(/layer 1\/\d+ staged/, 2);
    sigint.signal('SIGINT');
    expect(await sigint.exited).toBe(130);
    expect(sigint.err()).toMatch(new RegExp(`job ${id2} cancelled: job \\w+ was cancelled`));
    expect((await statusJson(c.address, id2)).jobs[0]).toMatchObject({ state: 'cancelled', result: { exit_code: 130 } });
    expect(readdirSync(join(data, 'out'))).toEqual([]);
  });

  test('job api - a coordinator stopped (SIGTERM, grace over) with a job in flight: the next one resumes it to the same bytes', async () => {
    const data = join(dir, 'd5');
    const w = worker({ ARROWQUANT_KERNEL: 'reference' });
    await w.waitFor(/ready/);
    // --grace 0: the job cannot finish within it, whatever the machine's speed
    const first = await coordinator(data, ['--grace', '0']);
    const d = await runCli(['submit', slowModel, '-o', 'resumed.arrow', ...client(first.address), '--detach', '--refine', 'search']);
    expect(d.code, d.stderr).toBe(0);
    const id = d.stdout.trim();
    await first.proc.waitFor(/layer 1\/\d+ staged/);
    first.proc.signal('SIGTERM');
    // The job cannot finish in time; the coordinator ends anyway and leaves it running.
    expect(await first.proc.exited).toBe(0);
    expect(first.proc.err()).toMatch(/1 job\(s\) still running are left for the next coordinator to resume/);
    const second = await coordinator(data);
    const f = await runCli(['watch', id, ...client(second.address)]);
    expect(f.code, f.stderr).toBe(0);
    expect(second.proc.err()).toMatch(/resuming a job that was running/);
    expect(readFileSync(join(data, 'out', 'resumed.arrow')).equals(slowLocal)).toBe(true);
    expect(second.proc.err()).toMatch(/[1-9]\d* already staged/);
  });

  test('job api - a job whose cluster job another coordinator holds waits for its lease, then runs', async () => {
    const data = join(dir, 'd7');
    const lease = { ARROW_QUANT_JOB_LEASE_MS: '2000' };
    const w = worker({ ARROWQUANT_KERNEL: 'reference' });
    await w.waitFor(/ready/);
    // A `quantize --nats` coordinator holds the cluster job of the same model and settings.
    const holder = startCli(['quantize', slowerModel, '-o', join(dir, 'held-elsewhere.arrow'), '--nats', cluster.nats.url, '--listen', '127.0.0.1:0', '--refine', 'search'], { ...ENV, ...lease });
    cluster.procs.push(holder);
    await holder.waitFor(/job \w+: \d+ layers/);
    const proc = startCli(['coordinator', '--name', 'd7', '--nats', cluster.nats.url, '--listen', '127.0.0.1:0', '--shard-listen', '127.0.0.1:0', '--data', data,
      '--model-root', modelsDir, '--auth-token-file', tokenFile, '--grace', '2'], { ...ENV, ...lease });
    cluster.procs.push(proc);
    const address = /[\d.]+:\d+$/.exec((await proc.waitFor(/job API listening on [\d.]+:\d+/))[0]!)![0];
    const d = await runCli(['submit', slowerModel, '-o', 'held.arrow', ...client(address), '--detach', '--refine', 'search']);
    expect(d.code, d.stderr).toBe(0);
    await proc.waitFor(/is held by .*; trying again in 2\.0 s \(attempt 1 of 5\)/);
    holder.signal('SIGINT');
    expect(await holder.exited).toBe(130);
    // the lease freed, the job runs (and is cancelled here: running it to the end shows nothing more)
    await proc.waitFor(/layer 1\/\d+ staged/);
    const id = d.stdout.trim();
    expect((await statusJson(address, id)).jobs[0]).toMatchObject({ state: 'running' });
    const cancel = await runCli(['cancel', id, ...client(address)]);
    expect(cancel.stderr).toMatch(new RegExp(`job ${id}: cancelled`));
  });
});
