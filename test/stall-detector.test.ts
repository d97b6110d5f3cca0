// The coordinator's stall detector against a real nats-server: when none of a job's missing
// layers is queued or in flight it publishes them once more, then fails naming each one's last
// recorded failure; a job without progress fails saying why.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { connect, type KV, type NatsConnection } from 'nats';
import { ensureTaskQueue, jobsBucket, workersBucket } from '../core/cluster/jetstream-setup.js';
import { failureKey } from '../core/cluster/names.js';
import { encodeMessage, type WorkerEvent } from '../core/cluster/messages.js';
import { DeliveriesExhaustedError, JobStalledError } from '../core/cluster/errors.js';
import { StallDetector, clearFailures, exhaustedError, type StallWatch } from '../coordinator/cluster/stall-detector.js';
import { startNatsServer, type NatsTestServer } from './helpers/nats-server.js';

let nats: NatsTestServer;
let nc: NatsConnection;
let kv: KV;

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
  await ensureTaskQueue(nc);
  kv = await jobsBucket(nc);
});

afterAll(async () => {
  await nc?.close();
  await nats?.stop();
});

const failed = (jobId: string, layer: number, message: string): WorkerEvent => ({
  type: 'layer_failed', job_id: jobId, layer_index: layer, name: `w${layer}`, worker_id: 'worker-7', final: false,
  error: { name: 'ShardFileError', message, fields: {} },
});

/** Runs a detector over a job of `layers` layers of which none is done, until it fails the job. */
async function verdict(jobId: string, layers: number, extra: Partial<StallWatch> = {}): Promise<Error> {
  let detector!: StallDetector;
  const err = await new Promise<Error>((resolve) => {
    detector = new StallDetector({
      nc, kv, workersKv: {} as KV, jobId, layers, done: () => 0, isDone: () => false, fail: resolve, stallMs: 600_000, ...extra,
    });
    detector.start();
  }).finally(() => detector.stop());
  return err;
}

describe('stall detector', () => {
  test("stall detector - missing layers with nothing queued: the error names each one's last recorded failure", async () => {
    const jobId = 'stallnamed';
    await kv.put(failureKey(jobId, 1), encodeMessage(failed(jobId, 1, 'cannot write /w/x.tensor.part-1: ENOSPC: no space left on device, write')));
    const republished: number[][] = [];
    const err = await verdict(jobId, 2, { tickMs: 100, republish: async (l) => void republished.push(l) });
    expect(republished).toEqual([[0, 1]]); // once, then the verdict
    expect(err).toBeInstanceOf(DeliveriesExhaustedError);
    expect(err.message).toBe(
      `job ${jobId}: 2 layer(s) missing (0, 1) and none of their tasks is queued or in flight any more (deliveries exhausted, or a worker ` +
        'skipped them as staged in the job state); layer 1: last: worker-7: cannot write /w/x.tensor.part-1: ENOSPC: no space left on device, write',
    );
    const adv = await exhaustedError(kv, jobId, 1, 'w1', 5);
    expect(adv.message).toBe('layer 1 (w1): 5 deliveries failed; last: worker-7: cannot write /w/x.tensor.part-1: ENOSPC: no space left on device, write');
    expect((await exhaustedError(kv, jobId, 0, 'w0', 5)).message).toBe("layer 0 (w0): 5 deliveries failed; see the workers' logs");
    await clearFailures(kv, jobId);
    expect((await kv.get(failureKey(jobId, 1)))?.operation).toBe('DEL');
  });

  test('stall detector - layers that vanished are republished once, then the job fails', async () => {
    const republished: number[][] = [];
    const lines: string[] = [];
    const err = await verdict('stallvanished', 3, { tickMs: 100, republish: async (l) => void republished.push(l), log: (l) => lines.push(l) });
    expect(republished).toEqual([[0, 1, 2]]);
    expect(lines).toEqual(['coordinator: job stallvanished: layer(s) 0, 1, 2 left the task queue without being staged; publishing them again (once)']);
    expect(err).toBeInstanceOf(DeliveriesExhaustedError);
    expect(err.message).toMatch(/^job stallvanished: 3 layer\(s\) missing \(0, 1, 2\) and none of their tasks is queued .*; see the workers' logs$/);
  });

  test('stall detector - no progress for the stall time with no workers: JobStalledError saying so', async () => {
    const workersKv = await workersBucket(nc);
    // something queued (another job's task) keeps the empty-queue verdict away
    await nc.jetstream().publish('aq.tasks.otherjob', encodeMessage({}));
    const err = await verdict('stallidle', 1, { workersKv, stallMs: 600 });
    expect(err).toBeInstanceOf(JobStalledError);
    expect(err.message).toMatch(/^job stallidle made no progress for \d+ s \(0\/1 layers staged\): no live workers \(none has a heartbeat in the aq-workers bucket\)$/);
  });
});
