// The one job driver: the concurrency loop it runs layers with, the summary builder, and local
// and cluster runs of the fixture model (a real nats-server, a real worker process) reporting
// through that one builder — same keys, same rounding, the cluster's own figures real.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ArrowQuantError, QualityBarError } from '../core/errors.js';
import type { PreparedJob } from '../coordinator/job.js';
import type { LayerMeasurer } from '../coordinator/layer-measurements.js';
import { LocalExecutor, type LocalRunOptions } from '../coordinator/local-run.js';
import { runJob, type Execution } from '../coordinator/run/driver.js';
import { runInLanes } from '../coordinator/run/lanes.js';
import { runSummary } from '../coordinator/run/run-summary.js';
import { prepareJobForPlan } from '../coordinator/job.js';
import { resolveConfig } from '../core/config/load.js';
import { startNatsServer, type NatsTestServer } from './helpers/nats-server.js';
import { startCli, stopAll, type Proc } from './helpers/processes.js';
import { FIXTURE_MODELS, runCli } from './helpers/cli.js';
import { tempDir } from './helpers/models.js';

const { dir, cleanup } = tempDir('aq-driver-');
const BF16 = join(FIXTURE_MODELS, 'stories260K-bf16.safetensors');
/** what a cluster run adds to the summary, and nothing else */
const CLUSTER_ONLY = ['grpc_bytes_received', 'layers_published', 'layers_resumed', 'mode', 'shards_from_memory', 'shards_from_stage_files', 'shards_written_directly', 'workers'];
const isRounded = (x: number) => Math.round(x * 1000) / 1000 === x;

let nats: NatsTestServer;
const procs: Proc[] = [];

beforeAll(async () => {
  nats = await startNatsServer();
});

afterAll(async () => {
  await stopAll(procs);
  await nats?.stop();
  cleanup();
});

/** The local executor, recording which of its steps the driver called, in order. */
class RecordingExecutor extends LocalExecutor {
  readonly calls: string[] = [];
  constructor(opts: LocalRunOptions) {
    super(opts);
  }
  override start(job: PreparedJob): Promise<void> {
    this.calls.push('start');
    return super.start(job);
  }
  override withMeasurer<T>(use: (measurer: LayerMeasurer, concurrency: number) => Promise<T>): Promise<T> {
    this.calls.push('withMeasurer');
    return super.withMeasurer(use);
  }
  override execute(job: PreparedJob): Promise<Execution> {
    this.calls.push('execute');
    return super.execute(job);
  }
  override completed(): Promise<object> {
    this.calls.push('completed');
    return super.completed();
  }
  override failed(e: unknown): Promise<unknown> {
    this.calls.push(`failed: ${(e as Error).constructor.name}`);
    return super.failed(e);
  }
  override close(): Promise<void> {
    this.calls.push('close');
    return super.close();
  }
}

describe('job driver', () => {
  test('job driver - steps in order: measured only when asked; a failed check reaches failed() and close(), and leaves no file', async () => {
    const plain = { output: join(dir, 'plain.arrow'), config: resolveConfig({}), measurementCacheDir: null };
    const a = new RecordingExecutor(plain);
    expect((await runJob(BF16, plain, a)).layers).toBe(48);
    expect(a.calls).toEqual(['start', 'execute', 'completed', 'close']);

    const measured = { ...plain, output: join(dir, 'measured.arrow'), config: resolveConfig({ enable_mixed_precision: true, allocation_strategy: 'measured', target_model_size_mb: 0.22 }) };
    const b = new RecordingExecutor(measured);
    expect((await runJob(BF16, measured, b)).allocation?.strategy).toBe('measured');
    expect(b.calls).toEqual(['start', 'withMeasurer', 'execute', 'completed', 'close']);

    // every layer is written, then the job-level quality bar (checked before the footer) fails
    const barred = { ...plain, output: join(dir, 'barred.arrow'), config: resolveConfig({ bit_width: 2, min_layer_cosine: { 2: 0 }, min_accuracy: 0.9999 }) };
    const c = new RecordingExecutor(barred);
    const err = await runJob(BF16, barred, c).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QualityBarError);
    expect((err as Error).message).toMatch(/parameter-weighted mean cosine of the quantized layers is 0\.\d+, below min_accuracy 0\.9999/);
    expect(c.calls).toEqual(['start', 'execute', 'failed: QualityBarError', 'close']);
    expect(existsSync(barred.output)).toBe(false);
    expect(readdirSync(dir).filter((f) => f.startsWith('barred'))).toEqual([]);
  });

  test('job driver - lanes: at most `limit` run at once, results in index order', async () => {
    let running = 0;
    let most = 0;
    const results = await runInLanes(7, 3, async (i) => {
      most = Math.max(most, ++running);
      await new Promise<void>((r) => setImmediate(r));
      running--;
      return i * i;
    });
    expect(results).toEqual([0, 1, 4, 9, 16, 25, 36]);
    expect(most).toBe(3);
  });

  test('job driver - lanes: the lowest failing index is thrown, and no item starts after a failure', async () => {
    const started: number[] = [];
    // item 2 fails at once, item 1 fails later: the error is item 1's whatever the timing
    const run = runInLanes(10, 3, async (i) => {
      started.push(i);
      if (i === 1) await new Promise<void>((r) => setTimeout(r, 20));
      if (i === 1 || i === 2) throw new ArrowQuantError(`item ${i} failed`);
      return i;
    });
    await expect(run).rejects.toThrow(new ArrowQuantError('item 1 failed'));
    expect(started.sort((a, b) => a - b)).toEqual([0, 1, 2, 3]);
  });

  test('job driver - the summary builder rounds every figure to milliseconds', () => {
    const job = { ...prepareJobForPlan(BF16, resolveConfig({})), output: '/x/out.arrow' };
    const file = { layers: 1 } as unknown as Parameters<typeof runSummary>[1];
    const s = runSummary(job, file, { kernel: 'avx2', threads: 3, timings: { readMs: 1234.5678, kernelMs: 0.0004, hashMs: 2.0005, writeMs: 999.9996 } }, { elapsedS: 1.23456, mergeS: 0.0125 });
    expect(s).toMatchObject({ layers: 1, output: '/x/out.arrow', job_id: job.id, kernel: 'avx2', threads: 3, elapsed_s: 1.235 });
    expect(s.timings_s).toEqual({ read: 1.235, kernel: 0, hash: 0.002, write: 1, merge: 0.013 });
    expect(s.input_gb_per_s).toBe(Math.round((job.plan.totalBytesIn / 1e9 / 1.23456) * 1000) / 1000);
    expect(s.allocation).toBeUndefined();
  });

  test('job driver - local and cluster summaries come from the same builder: same keys, same rounding, real worker figures', async () => {
    const env = { XDG_CACHE_HOME: join(dir, 'cache'), ARROW_QUANT_JOB_LEASE_MS: '4000' };
    // measured allocation: the plan (and its "allocation" summary) goes through each executor's measurer
    const args = ['--mixed-precision', '--strategy', 'measured', '--target-size-mb', '0.22', '--json'];
    const localOut = join(dir, 'local.arrow');
    const local = await runCli(['quantize', BF16, '-o', localOut, '--threads', '2', ...args], { env });
    expect(local.code, local.stderr).toBe(0);

    const worker = startCli(['worker', '--nats', nats.url, '--concurrency', '1', '--threads', '1', '--model-root', FIXTURE_MODELS, '--grace', '5'], env);
    procs.push(worker);
    await worker.waitFor(/ready/);
    const clusterOut = join(dir, 'cluster.arrow');
    const coordinator = startCli(['quantize', BF16, '-o', clusterOut, '--nats', nats.url, '--listen', '127.0.0.1:0', ...args], env);
    procs.push(coordinator);
    expect(await coordinator.exited, coordinator.err()).toBe(0);
    expect(Buffer.compare(readFileSync(clusterOut), readFileSync(localOut))).toBe(0);

    const l = JSON.parse(local.stdout);
    const c = JSON.parse(coordinator.out());
    const localKeys = Object.keys(l).sort();
    expect(localKeys).toContain('allocation');
    expect(Object.keys(c).filter((k) => !localKeys.includes(k)).sort()).toEqual(CLUSTER_ONLY);
    expect(localKeys.filter((k) => !(k in c))).toEqual([]);
    expect(Object.keys(c.timings_s)).toEqual(Object.keys(l.timings_s));
    // the file's summary and the plan's allocation are the job's, however it ran
    for (const k of ['layers', 'layers_per_bit_width', 'fallback_layers', 'bytes_in', 'bytes_out', 'compression_ratio', 'weighted_sqnr_db', 'weighted_cosine', 'job_id', 'allocation']) {
      expect(c[k], k).toEqual(l[k]);
    }
    for (const s of [l, c]) {
      for (const x of [s.elapsed_s, s.input_gb_per_s, ...Object.values(s.timings_s as Record<string, number>)]) expect(isRounded(x), `${x}`).toBe(true);
      expect(Number.isInteger(s.peak_rss_mb)).toBe(true);
    }
    // the cluster's kernel and threads are its one worker's; its thread time is what the worker measured
    expect(l.threads).toBe(2);
    expect(c).toMatchObject({ mode: 'cluster', threads: 1, kernel: l.kernel, layers_published: 48, layers_resumed: 0, workers: [expect.any(String)] });
    expect(c.timings_s.kernel).toBeGreaterThan(0);
    expect(c.timings_s.read).toBeGreaterThan(0);
  });
});
