// A worker's Prometheus endpoint (--metrics-listen) scraped during and after a real cluster job
// (real nats-server, worker and coordinator processes): its counts agree with the job's summary.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { startNatsServer, type NatsTestServer } from './helpers/nats-server.js';
import { startCli, stopAll, type Proc } from './helpers/processes.js';
import { FIXTURE_MODELS, runCli } from './helpers/cli.js';
import { tempDir } from './helpers/models.js';

const { dir, cleanup } = tempDir('aq-metrics-');
const BF16 = join(FIXTURE_MODELS, 'stories260K-bf16.safetensors');
let nats: NatsTestServer;
const procs: Proc[] = [];

beforeAll(async () => {
  nats = await startNatsServer();
});
afterEach(() => stopAll(procs.splice(0)));
afterAll(() => nats?.stop().finally(cleanup));

interface Sample { name: string; labels: Record<string, string>; value: number }

/** The samples of a Prometheus text exposition (comments skipped). */
function parseExposition(text: string): Sample[] {
  return text.split('\n').filter((l) => l && !l.startsWith('#')).map((line) => {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a Prometheus sample line: ${line}`);
    const labels = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1]!, l[2]!]));
    return { name: m[1]!, labels, value: Number(m[3]) };
  });
}

async function scrape(url: string): Promise<(name: string, labels?: Record<string, string>) => number> {
  const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  const samples = parseExposition(await res.text());
  return (name, labels = {}) => {
    const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
    if (found.length !== 1) throw new Error(`${found.length} samples of ${name} ${JSON.stringify(labels)}`);
    return found[0]!.value;
  };
}

async function startWorker(modelRoot: string): Promise<{ w: Proc; url: string; id: string }> {
  const w = startCli(['worker', '--nats', nats.url, '--concurrency', '1', '--threads', '1', '--model-root', modelRoot, '--grace', '5', '--metrics-listen', '127.0.0.1:0']);
  procs.push(w);
  const [ready] = await w.waitFor(/^worker (\S+): ready/);
  const [line] = await w.waitFor(/metrics on http:\/\/127\.0\.0\.1:\d+\/metrics$/);
  return { w, url: line!.split('metrics on ')[1]!, id: /^worker (\S+):/.exec(ready!)![1]! };
}

describe('worker metrics', () => {
  test('worker metrics - layers, bytes and durations of a real job, scraped during and after it', async () => {
    const { w, url, id } = await startWorker(FIXTURE_MODELS);
    let m = await scrape(url);
    expect(m('arrowquant_worker_layers_done_total', { worker: id })).toBe(0);
    expect(m('arrowquant_worker_layers_in_flight', { worker: id })).toBe(0);

    const c = startCli(['quantize', BF16, '-o', join(dir, 'job.arrow'), '--nats', nats.url, '--listen', '127.0.0.1:0', '--json', '--mixed-precision']);
    procs.push(c);
    await w.waitFor(/uploaded layer/);
    m = await scrape(url); // mid-job (or just after, on a fast machine): some layers, never more than the model has
    const during = m('arrowquant_worker_layers_done_total', { worker: id });
    expect(during).toBeGreaterThanOrEqual(1);
    expect(during).toBeLessThanOrEqual(48);
    expect(await c.exited, c.err()).toBe(0);
    const summary = JSON.parse(c.out());
    expect(summary).toMatchObject({ mode: 'cluster', layers: 48 });

    m = await scrape(url);
    expect(m('arrowquant_worker_layers_done_total', { worker: id })).toBe(48);
    expect(m('arrowquant_worker_bytes_in_total')).toBe(summary.bytes_in);
    expect(m('arrowquant_worker_bytes_out_total')).toBe(summary.bytes_out);
    expect(m('arrowquant_worker_layer_duration_seconds_count')).toBe(48);
    expect(m('arrowquant_worker_layer_duration_seconds_sum')).toBeGreaterThan(0);
    expect(m('arrowquant_worker_layer_duration_seconds_bucket', { le: '+Inf' })).toBe(48);
    expect(m('arrowquant_worker_layers_in_flight')).toBe(0);
    expect(m('arrowquant_worker_layers_redelivered_total')).toBe(0);
    for (const outcome of ['retried', 'final', 'refused']) expect(m('arrowquant_worker_layers_failed_total', { outcome })).toBe(0);
    expect(m('process_cpu_seconds_total')).toBeGreaterThan(0);

    const other = await fetch(url.replace('/metrics', '/'), { signal: AbortSignal.timeout(10_000) });
    expect(other.status).toBe(404);
  });

  test('worker metrics - tasks a worker may not read are counted as refused; a bad --metrics-listen exits 2', async () => {
    const elsewhere = join(dir, 'other-models');
    mkdirSync(elsewhere);
    const { url } = await startWorker(elsewhere);
    const c = startCli(['quantize', BF16, '-o', join(dir, 'refused.arrow'), '--nats', nats.url, '--listen', '127.0.0.1:0', '--json']);
    procs.push(c);
    expect(await c.exited).not.toBe(0);
    const m = await scrape(url);
    expect(m('arrowquant_worker_layers_failed_total', { outcome: 'refused' })).toBeGreaterThanOrEqual(1);
    expect(m('arrowquant_worker_layers_done_total')).toBe(0);

    for (const bad of ['nonsense', '127.0.0.1:70000', 'host:']) {
      const r = await runCli(['worker', '--nats', nats.url, '--metrics-listen', bad]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`--metrics-listen: expected HOST:PORT (port 0-65535), got ${JSON.stringify(bad)}`);
    }
  });
});
