// The NATS accounts and users of docs/nats-permissions.conf, loaded as they are: a job runs with
// the coordinator and worker users, and the worker user can neither publish a task nor write a
// job's state.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { connect } from 'nats';
import { startNatsServer, type NatsTestServer } from './helpers/nats-server.js';
import { startCli, stopAll, type Proc } from './helpers/processes.js';
import { FIXTURE_MODELS, ROOT, runCli } from './helpers/cli.js';
import { tempDir } from './helpers/models.js';

const { dir, cleanup } = tempDir('aq-perm-');
const BF16 = join(FIXTURE_MODELS, 'stories260K-bf16.safetensors');
const PASS = { AQ_COORDINATOR_PASSWORD: 'coord-pw-81c2', AQ_WORKER_PASSWORD: 'worker-pw-3f0a' };
const ENV = { ARROW_QUANT_TASK_ACK_WAIT_MS: '2000', ARROW_QUANT_JOB_LEASE_MS: '4000' };
let nats: NatsTestServer;
let procs: Proc[] = [];

beforeAll(async () => {
  Object.assign(process.env, PASS); // nats-server reads $AQ_*_PASSWORD from its environment
  nats = await startNatsServer({ config: readFileSync(join(ROOT, 'docs', 'nats-permissions.conf'), 'utf8') });
});

afterEach(async () => {
  await stopAll(procs);
  procs = [];
});

afterAll(async () => {
  await nats?.stop();
  cleanup();
});

const as = (user: 'coordinator' | 'worker') => ({
  ...ENV, ARROW_QUANT_NATS_USER: `aq-${user}`, ARROW_QUANT_NATS_PASSWORD: user === 'worker' ? PASS.AQ_WORKER_PASSWORD : PASS.AQ_COORDINATOR_PASSWORD,
});

describe('cluster permissions', () => {
  test('cluster permissions - the documented accounts run a job; the worker user cannot publish a task or write job state', async () => {
    const out = join(dir, 'perm.arrow');
    const c = startCli(['quantize', BF16, '-o', out, '--nats', nats.url, '--listen', '127.0.0.1:0'], as('coordinator'));
    procs.push(c);
    await c.waitFor(/shards to/);
    const w = startCli(['worker', '--nats', nats.url, '--threads', '1', '--model-root', FIXTURE_MODELS], as('worker'));
    procs.push(w);
    expect(await c.exited, `${c.err()}\n--- worker:\n${w.err()}`).toBe(0);
    const local = join(dir, 'local.arrow');
    expect((await runCli(['quantize', BF16, '-o', local])).code).toBe(0);
    expect(Buffer.compare(readFileSync(out), readFileSync(local))).toBe(0);
    const st = await runCli(['status', '--nats', nats.url, '--json'], { env: as('coordinator') });
    expect(st.code, st.stderr).toBe(0);

    const nc = await connect({ servers: nats.url, user: 'aq-worker', pass: PASS.AQ_WORKER_PASSWORD });
    const errors: string[] = [];
    void (async () => {
      for await (const s of nc.status()) if (s.type === 'error') errors.push(String(s.data)); // the error code
    })();
    const js = nc.jetstream();
    const task = await js.publish('aq.tasks.forged', new TextEncoder().encode('{}'), { timeout: 1_000 }).catch((e: Error) => e);
    expect(task).toBeInstanceOf(Error);
    const state = await js.publish('$KV.aq-jobs.forged', new TextEncoder().encode('{}'), { timeout: 1_000 }).catch((e: Error) => e);
    expect(state).toBeInstanceOf(Error);
    await nc.flush();
    // one violation per refused publish (nats.js reports the code, the server log names the subject)
    expect(errors).toEqual(['PERMISSIONS_VIOLATION', 'PERMISSIONS_VIOLATION']);
    await nc.close();
  }, 120_000);

  test('cluster permissions - the password from a file (--nats-password-file); an unreadable one is exit 2 naming it', async () => {
    const file = join(dir, 'coordinator.password');
    writeFileSync(file, `${PASS.AQ_COORDINATOR_PASSWORD}\n`, { mode: 0o600 });
    const ok = await runCli(['status', '--nats', nats.url, '--nats-user', 'aq-coordinator', '--nats-password-file', file]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stderr).toMatch(/\d+ worker\(s\)/);
    const missing = await runCli(['status', '--nats', nats.url, '--nats-user', 'aq-coordinator', '--nats-password-file', join(dir, 'nope')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/--nats-password-file .*nope: cannot read it \(ENOENT\)/);
  });
});
