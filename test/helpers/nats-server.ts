// A real NATS server with JetStream for integration tests, one per test file: testcontainers
// when a container runtime answers, else the `nats-server` binary (Debian package) on a free
// loopback port with a temporary store, stopped by its pid. `restart()` keeps port and store.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';

export interface NatsServerOptions {
  /** extra lines for the server's config file (tls {…}, authorization {…}) */
  config?: string;
}

export interface NatsTestServer {
  url: string;
  port: number;
  /** how it was started: "testcontainers" or "binary" */
  via: string;
  stop(): Promise<void>;
  restart(): Promise<void>;
}

/**
 * The nats-server binary: on the PATH, else where Debian's package puts it (/usr/sbin is not on
 * an ordinary user's PATH), else /usr/local/bin. NATS_SERVER_BIN overrides.
 */
export function natsServerBinary(env: NodeJS.ProcessEnv = process.env): string {
  if (env.NATS_SERVER_BIN) return env.NATS_SERVER_BIN;
  const dirs = [...(env.PATH ?? '').split(delimiter).filter(Boolean), '/usr/sbin', '/usr/local/sbin', '/usr/local/bin', '/usr/bin'];
  for (const d of dirs) if (existsSync(join(d, 'nats-server'))) return join(d, 'nats-server');
  throw new Error(`nats-server not found on the PATH (${env.PATH ?? ''}) nor in /usr/sbin, /usr/local/sbin, /usr/local/bin, /usr/bin: install it (Debian/Ubuntu: apt-get install nats-server; or https://github.com/nats-io/nats-server/releases) or set NATS_SERVER_BIN`);
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

async function tryContainer(): Promise<NatsTestServer | null> {
  // Only ask testcontainers when something suggests a runtime; it fails fast otherwise anyway.
  if (!process.env.DOCKER_HOST && !existsSync('/var/run/docker.sock')) return null;
  try {
    const { GenericContainer } = await import('testcontainers');
    const container = await new GenericContainer('nats:2.10-alpine').withCommand(['-js']).withExposedPorts(4222).start();
    const port = container.getMappedPort(4222);
    return {
      url: `nats://${container.getHost()}:${port}`,
      port,
      via: 'testcontainers',
      stop: async () => void (await container.stop()),
      restart: async () => void (await container.restart()),
    };
  } catch {
    return null;
  }
}

async function waitForPort(port: number, child: ChildProcess, timeoutMs = 10_000): Promise<void> {
  const { connect } = await import('node:net');
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`nats-server exited with ${child.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nats-server did not listen on ${port} within ${timeoutMs} ms`);
}

export async function startNatsServer(opts: NatsServerOptions = {}): Promise<NatsTestServer> {
  if (!opts.config) {
    const c = await tryContainer();
    if (c) return c;
  }
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'aq-nats-'));
  const conf = join(dir, 'nats.conf');
  writeFileSync(
    conf,
    [`listen: 127.0.0.1:${port}`, `jetstream { store_dir: "${join(dir, 'js')}" }`, opts.config ?? ''].join('\n'),
  );
  let child: ChildProcess;
  const logs: string[] = [];
  const launch = async () => {
    child = spawn(natsServerBinary(), ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stderr!.on('data', (d) => logs.push(String(d)));
    child.stdout!.on('data', (d) => logs.push(String(d)));
    try {
      await waitForPort(port, child);
    } catch (e) {
      throw new Error(`${(e as Error).message}\n${logs.join('')}`);
    }
  };
  const stopChild = () =>
    new Promise<void>((resolve) => {
      if (!child || child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill('SIGTERM');
    });
  await launch();
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    via: 'binary',
    async stop() {
      await stopChild();
      rmSync(dir, { recursive: true, force: true });
    },
    async restart() {
      await stopChild();
      await launch();
    },
  };
}
