// Cluster mode with security turned on: NATS over TLS with token auth, gRPC with mutual TLS,
// all with certificates this test generates.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { generateTestCerts, type TestCerts } from './helpers/certs.js';
import { startNatsServer, type NatsTestServer } from './helpers/nats-server.js';
import { startCli, stopAll, type Proc } from './helpers/processes.js';
import { FIXTURE_MODELS, runCli } from './helpers/cli.js';
import { tempDir } from './helpers/models.js';

const { dir, cleanup } = tempDir('aq-tls-');
const BF16 = join(FIXTURE_MODELS, 'stories260K-bf16.safetensors');
const TOKEN = 'test-token-5f1c';
let certs: TestCerts;
let nats: NatsTestServer;
let procs: Proc[] = [];

beforeAll(async () => {
  certs = await generateTestCerts();
  nats = await startNatsServer({
    config: [
      'tls {',
      `  cert_file: "${certs.server.certFile}"`,
      `  key_file: "${certs.server.keyFile}"`,
      `  ca_file: "${certs.ca.certFile}"`,
      '  verify: true',
      '}',
      `authorization { token: "${TOKEN}" }`,
    ].join('\n'),
  });
});

afterEach(async () => {
  await stopAll(procs);
  procs = [];
});

afterAll(async () => {
  await nats?.stop();
  await certs?.cleanup();
  cleanup();
});

const natsUrl = () => `tls://127.0.0.1:${nats.port}`;
const natsClientArgs = () => ['--nats', natsUrl(), '--nats-tls-ca', certs.ca.certFile, '--nats-tls-cert', certs.client.certFile, '--nats-tls-key', certs.client.keyFile];
const env = { ARROW_QUANT_NATS_TOKEN: TOKEN, ARROW_QUANT_TASK_ACK_WAIT_MS: '2000' };

describe('cluster tls', () => {
  test('cluster tls - NATS over TLS with a token and gRPC with mutual TLS: same bytes as the local run', async () => {
    const w = startCli(['worker', ...natsClientArgs(), '--threads', '1', '--model-root', FIXTURE_MODELS,
      '--grpc-tls-ca', certs.ca.certFile, '--grpc-tls-cert', certs.client.certFile, '--grpc-tls-key', certs.client.keyFile], env);
    procs.push(w);
    await w.waitFor(/ready/);
    const out = join(dir, 'tls.arrow');
    const c = startCli(['quantize', BF16, '-o', out, ...natsClientArgs(), '--listen', '127.0.0.1:0', '--advertise', 'localhost:0',
      '--grpc-tls-cert', certs.server.certFile, '--grpc-tls-key', certs.server.keyFile, '--grpc-tls-client-ca', certs.ca.certFile, '--json'], env);
    procs.push(c);
    expect(await c.exited, c.err()).toBe(0);
    const local = join(dir, 'local.arrow');
    expect((await runCli(['quantize', BF16, '-o', local])).code).toBe(0);
    expect(Buffer.compare(readFileSync(out), readFileSync(local))).toBe(0);
  });

  test('cluster tls - a worker without a client certificate cannot upload; a client without the token cannot connect', async () => {
    const noToken = await runCli(['worker', ...natsClientArgs(), '--threads', '1'], { env: { ARROW_QUANT_NATS_TOKEN: '' }, timeoutMs: 30_000 });
    expect(noToken.code).toBe(1);
    expect(noToken.stderr).toMatch(/cannot connect to NATS at tls:\/\/127\.0\.0\.1:\d+: .*(Authorization|authorization)/);
    const w = startCli(['worker', ...natsClientArgs(), '--threads', '1', '--model-root', FIXTURE_MODELS, '--grpc-tls-ca', certs.ca.certFile], env);
    procs.push(w);
    await w.waitFor(/ready/);
    const out = join(dir, 'nocert.arrow');
    const c = startCli(['quantize', BF16, '-o', out, ...natsClientArgs(), '--listen', '127.0.0.1:0', '--advertise', 'localhost:0',
      '--grpc-tls-cert', certs.server.certFile, '--grpc-tls-key', certs.server.keyFile, '--grpc-tls-client-ca', certs.ca.certFile], env);
    procs.push(c);
    await w.waitFor(/upload of layer \d+ of job \w+ failed \([\s\S]*?UNAVAILABLE[\s\S]*?certificate required[\s\S]*?\); retrying/);
    c.signal('SIGINT');
    expect(await c.exited).toBe(130);
    expect(c.err()).toMatch(/was cancelled/);
    expect(existsSync(out)).toBe(false);
  });
});
