// Real CLI processes for integration tests (workers, coordinators), with their output captured
// and waits on what they print — never sleeps as synchronisation.

import { spawn, type ChildProcess } from 'node:child_process';
import { CLI, ROOT } from './cli.js';

export interface Proc {
  child: ChildProcess;
  pid: number;
  out: () => string;
  err: () => string;
  /** resolves with the exit code (or the signal name) */
  exited: Promise<number | string>;
  /** resolves when stderr has `count` lines matching `re` (rejects if the process exits first) */
  waitFor(re: RegExp, count?: number, timeoutMs?: number): Promise<string[]>;
  signal(sig: NodeJS.Signals): void;
}

export function startCli(args: string[], env: NodeJS.ProcessEnv = {}): Proc {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const waiters: (() => void)[] = [];
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => {
    err += d;
    for (const w of waiters.slice()) w();
  });
  const exited = new Promise<number | string>((resolve) => child.on('exit', (code, sig) => {
    for (const w of waiters.slice()) w();
    resolve(code ?? sig ?? -1);
  }));
  return {
    child,
    pid: child.pid!,
    out: () => out,
    err: () => err,
    exited,
    signal: (sig) => {
      if (child.exitCode === null && child.signalCode === null) child.kill(sig);
    },
    waitFor(re, count = 1, timeoutMs = 60_000) {
      const global = new RegExp(re.source, re.flags.includes('g') ? re.flags : re.flags + 'gm');
      return new Promise((resolve, reject) => {
        const check = () => {
          const matches = err.match(global) ?? [];
          if (matches.length >= count) {
            cleanup();
            resolve(matches);
          } else if (child.exitCode !== null || child.signalCode !== null) {
            cleanup();
            reject(new Error(`process exited (${child.exitCode ?? child.signalCode}) before printing ${count}× ${re}; stderr:\n${err}`));
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`timed out waiting for ${count}× ${re}; stderr:\n${err}`));
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          const i = waiters.indexOf(check);
          if (i >= 0) waiters.splice(i, 1);
        };
        waiters.push(check);
        check();
      });
    },
  };
}

/** SIGTERM every process still running and wait for them. */
export async function stopAll(procs: Proc[]): Promise<void> {
  for (const p of procs) p.signal('SIGTERM');
  await Promise.all(procs.map((p) => Promise.race([p.exited, new Promise((r) => setTimeout(r, 15_000))])));
  for (const p of procs) p.signal('SIGKILL');
}
