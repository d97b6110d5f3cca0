// Seeded chaos (issue 10): runs of a 48-layer job under a random schedule of worker SIGKILL and
// SIGTERM, coordinator SIGKILL and restart, and NATS restart. Every run must end within a bound,
// either byte-identical to the local run or failed with a clear error; the note counts redone
// layers. Minutes long, so not in `npm test`: `npm run test:chaos` (AQ_CHAOS_RUNS, AQ_CHAOS_SEED).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { seededRandom } from '../core/model/random.js';
import { startNatsServer, type NatsTestServer } from './helpers/nats-server.js';
import { startCli, stopAll, type Proc } from './helpers/processes.js';
import { FIXTURE_MODELS, runCli } from './helpers/cli.js';
import { tempDir } from './helpers/models.js';

const RUNS = Number(process.env.AQ_CHAOS_RUNS ?? 10);
const SEED = Number(process.env.AQ_CHAOS_SEED ?? 20261201);
const RUN_BOUND_MS = 150_000;
const { dir, cleanup } = tempDir('aq-chaos-');
const ENV = { ARROW_QUANT_TASK_ACK_WAIT_MS: '2000', ARROW_QUANT_TASK_MAX_DELIVER: '20', ARROW_QUANT_JOB_LEASE_MS: '4000', ARROW_QUANT_STALL_TIMEOUT_MS: '60000' };
const BF16 = join(FIXTURE_MODELS, 'stories260K-bf16.safetensors');
const FAULTS = ['worker-sigkill', 'worker-sigterm', 'coordinator-sigkill', 'nats-restart'] as const;

let nats: NatsTestServer;
let procs: Proc[] = [];
let local: Buffer;

beforeAll(async () => {
  nats = await startNatsServer();
  const out = join(dir, 'local.arrow');
  expect((await runCli(['quantize', BF16, '-o', out, '--refine', 'search'])).code).toBe(0);
  local = readFileSync(out);
});
afterEach(async () => {
  await stopAll(procs);
  procs = [];
});
afterAll(async () => {
  await nats?.stop();
  cleanup();
});

const worker = () => {
  const p = startCli(['worker', '--nats', nats.url, '--threads', '1', '--model-root', FIXTURE_MODELS, '--grace', '2'], { ...ENV, ARROWQUANT_KERNEL: 'reference' });
  procs.push(p);
  return p;
};
const coordinator = (out: string) => {
  const p = startCli(['quantize', BF16, '-o', out, '--refine', 'search', '--nats', nats.url, '--listen', '127.0.0.1:0', '--json'], ENV);
  procs.push(p);
  return p;
};
const uploads = (ws: Proc[]) => ws.reduce((n, w) => n + (w.err().match(/uploaded layer/g)?.length ?? 0), 0);
const alive = (p: Proc) => p.child.exitCode === null && p.child.signalCode === null;

/** Resolves once the workers have uploaded `target` layers in all, or the coordinator exits. */
async function untilUploads(all: Proc[], target: number, c: Proc): Promise<boolean> {
  while (uploads(all) < target) {
    if (!alive(c)) return false;
    const live = all.filter(alive);
    await Promise.race([c.exited, ...live.map((w) => w.waitFor(/uploaded layer/, (w.err().match(/uploaded layer/g)?.length ?? 0) + 1, RUN_BOUND_MS).catch(() => undefined))]);
  }
  return alive(c);
}

describe.skipIf(!process.env.AQ_CHAOS)('cluster chaos', () => {
  test(`cluster chaos - ${RUNS} seeded runs under worker, coordinator and NATS faults end in bounded time, identical or failed clearly`, async () => {
    const notes: object[] = [];
    for (let r = 0; r < RUNS; r++) {
      const rng = seededRandom(SEED + r);
      const t0 = Date.now();
      const all: Proc[] = [worker(), worker()];
      await Promise.all(all.map((w) => w.waitFor(/ready/)));
      const out = join(dir, `chaos-${r}.arrow`);
      let c = coordinator(out);
      const faults: string[] = [];
      for (let f = 0, n = 1 + Math.floor(rng() * 2); f < n; f++) {
        const fault = FAULTS[Math.floor(rng() * FAULTS.length)]!;
        if (!(await untilUploads(all, uploads(all) + 1 + Math.floor(rng() * 12), c))) break;
        faults.push(fault);
        if (fault === 'nats-restart') await nats.restart();
        else if (fault === 'coordinator-sigkill') {
          c.signal('SIGKILL');
          await c.exited;
          c = coordinator(out);
        } else {
          const live = all.filter(alive);
          const victim = live[Math.floor(rng() * live.length)]!;
          victim.signal(fault === 'worker-sigkill' ? 'SIGKILL' : 'SIGTERM');
          await victim.exited;
          const fresh = worker();
          all.push(fresh);
          await fresh.waitFor(/ready/);
        }
      }
      const timer = new Promise<'timeout'>((res) => setTimeout(() => res('timeout'), RUN_BOUND_MS - (Date.now() - t0)));
      const code = await Promise.race([c.exited, timer]);
      expect(code, `run ${r} (${faults.join(', ')}) did not end within ${RUN_BOUND_MS / 1000} s:\n${c.err()}`).not.toBe('timeout');
      const summary = code === 0 ? JSON.parse(c.out()) : null;
      if (code === 0) expect(Buffer.compare(readFileSync(out), local), `run ${r}: output differs from the local run`).toBe(0);
      else expect(c.err(), `run ${r} failed without a clear error`).toMatch(/^arrowquant quantize: (?!internal error)/m);
      const total = uploads(all);
      const error = code === 0 ? undefined : /^arrowquant quantize: (.*)$/m.exec(c.err())?.[1];
      const skipped = all.reduce((n, w) => n + (w.err().match(/skipped layer \d+ .*: its shard is already staged/g)?.length ?? 0), 0);
      notes.push({ run: r, faults, exit: code, error, skipped_as_staged: skipped, seconds: Math.round((Date.now() - t0) / 100) / 10, uploads: total, resumed: summary?.layers_resumed ?? null, redone: total - 48 });
      await stopAll(all);
      procs = [];
    }
    console.log(JSON.stringify({ chaos: notes }));
  }, RUNS * (RUN_BOUND_MS + 30_000));
});
