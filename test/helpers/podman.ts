// Running podman (and the deploy/podman scripts) from tests: with the repository's containers.conf,
// asynchronously (minutes of podman must not block vitest's worker: its RPC would time out), bounded.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { ROOT } from './cli.js';

export const CONTAINERS_CONF = join(ROOT, 'deploy', 'podman', 'containers.conf');

export interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function exec(cmd: string, args: string[], timeoutMs: number): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: ROOT, env: { ...process.env, CONTAINERS_CONF }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')}: no result within ${timeoutMs / 1000} s; stderr:\n${stderr}`));
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`${cmd} ${args.join(' ')}: ${e.message}`));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

export const podman = (args: string[], timeoutMs: number): Promise<ExecResult> => exec('podman', args, timeoutMs);

/** Resolves when the container's log has a line matching `re` (follows the log; bounded). */
export function waitForLog(container: string, re: RegExp, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('podman', ['logs', '-f', container], { env: { ...process.env, CONTAINERS_CONF }, stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    const done = (e?: Error) => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      if (e) reject(e);
      else resolve();
    };
    const check = (d: Buffer) => {
      log += d;
      if (re.test(log)) done();
    };
    child.stdout.on('data', check);
    child.stderr.on('data', check);
    child.on('close', () => done(new Error(`${container} ended before logging ${re}:\n${log}`)));
    const timer = setTimeout(() => done(new Error(`${container} did not log ${re} within ${timeoutMs / 1000} s:\n${log}`)), timeoutMs);
  });
}
