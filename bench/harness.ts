// What the cluster benchmarks share: a loopback nats-server, CLI processes with their own CPU and
// peak RSS recorded by resource-report.ts, and the synthetic models of .bench/.

import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { packageRoot } from '../core/package-info.js';
import { syntheticLlamaTensors, type LlamaShape } from '../core/model/synthetic-llama.js';
import { writeSafetensors } from '../core/model/safetensors-writer.js';

/** The CLI the benchmarks run (AQ_BENCH_CLI: another build's dist/cli/main.js, for a before/after under the same load). */
export const CLI = () => process.env.AQ_BENCH_CLI ?? join(packageRoot(), 'dist', 'cli', 'main.js');
const PRELOAD = () => pathToFileURL(join(packageRoot(), 'dist', 'bench', 'resource-report.js')).href;

/** A ~0.5 GB model for the slower jobs (refine: search). */
export const BENCH_LLAMA_SMALL: LlamaShape = { hidden: 2048, intermediate: 5504, layers: 4, vocab: 16000, heads: 16, kvHeads: 16 };

/**
 * Read `path` through once, so that the run after it finds the file in the page cache. This
 * machine's kernel pages out memory it finds cold (DAMON), the page cache included, so a model
 * read a minute ago may be partly back on disk: without this the first run of a series pays for it.
 */
export function warmFile(path: string): void {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(16 << 20);
    for (let at = 0; ; ) {
      const n = readSync(fd, buf, 0, buf.length, at);
      if (n === 0) break;
      at += n;
    }
  } finally {
    closeSync(fd);
  }
}

export async function benchModelOf(shape: LlamaShape, name: string): Promise<string> {
  const dir = join(packageRoot(), '.bench');
  mkdirSync(dir, { recursive: true });
  const path = join(dir, name);
  if (!existsSync(path)) {
    process.stderr.write(`generating ${path} (once) …\n`);
    await writeSafetensors(path, syntheticLlamaTensors(shape, 'BF16', 42), { format: 'pt', source: 'arrowquant bench' });
    process.stderr.write(`  ${(statSync(path).size / 1e9).toFixed(2)} GB\n`);
  }
  return path;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

export interface ResourceReport {
  /** CPU seconds (user + system) from the mark (or the start) to exit */
  cpu_s: number;
  user_s: number;
  system_s: number;
  peak_rss_mb: number;
}

/** A child process with its stderr kept, its exit awaited, and its resources read at exit. */
export class BenchProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<number>;
  stdout = '';
  stderr = '';

  constructor(
    args: string[],
    private readonly reportFile: string,
    env: NodeJS.ProcessEnv = {},
  ) {
    this.child = spawn(process.execPath, ['--import', PRELOAD(), ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env, AQ_RESOURCE_REPORT: reportFile } });
    this.child.stdout!.on('data', (d) => (this.stdout += d));
    this.child.stderr!.on('data', (d) => (this.stderr += d));
    this.exited = new Promise((resolve) => this.child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1))));
  }

  /** Resolves when stderr matches `re`; rejects after `timeoutMs` or if the process exits first. */
  waitFor(re: RegExp, timeoutMs = 60_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(new Error(`timed out after ${timeoutMs} ms waiting for ${re} in:\n${this.stderr}`)), timeoutMs);
      const check = () => re.test(this.stderr) && done();
      const onExit = () => done(new Error(`exited while waiting for ${re}:\n${this.stderr}`));
      const done = (err?: Error) => {
        clearTimeout(timer);
        this.child.stderr!.off('data', check);
        this.child.off('exit', onExit);
        if (err) reject(err);
        else resolve();
      };
      this.child.stderr!.on('data', check);
      this.child.once('exit', onExit);
      check();
    });
  }

  mark(): void {
    this.child.kill('SIGUSR2');
  }

  /** CPU and peak RSS; the window starts at the last mark before exit when there is one. */
  resources(): ResourceReport {
    const lines = readFileSync(this.reportFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { kind: string; user_s: number; system_s: number; max_rss_mb: number });
    const exit = [...lines].reverse().find((l) => l.kind === 'exit');
    if (!exit) throw new Error(`${this.reportFile}: no exit record`);
    const mark = [...lines].reverse().find((l) => l.kind === 'mark') ?? { user_s: 0, system_s: 0 };
    const user = exit.user_s - mark.user_s;
    const system = exit.system_s - mark.system_s;
    return { cpu_s: round(user + system), user_s: round(user), system_s: round(system), peak_rss_mb: exit.max_rss_mb };
  }
}

export const round = (x: number, digits = 3) => Math.round(x * 10 ** digits) / 10 ** digits;

/** nats-server with JetStream on a free loopback port; stop() ends it by its pid. */
export async function startNats(dir: string): Promise<{ url: string; stop: () => Promise<void> }> {
  const port = await freePort();
  const child = spawn('nats-server', ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', join(dir, 'js')], { stdio: 'ignore' });
  const deadline = Date.now() + 10_000;
  for (;;) {
    const up = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1', () => (s.end(), resolve(true)));
      s.on('error', () => resolve(false));
    });
    if (up) break;
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`nats-server did not start on port ${port}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url: `nats://127.0.0.1:${port}`,
    stop: () => new Promise((resolve) => (child.exitCode !== null ? resolve() : (child.once('exit', () => resolve()), child.kill('SIGTERM')))),
  };
}
