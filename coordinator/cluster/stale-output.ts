// Temporary output files of runs that died (SIGKILL, a crash) are named <output>.tmp-<pid>; the
// coordinator that now holds the job removes those whose process is gone from this host.

import { readdirSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ESRCH';
  }
};

/** Removes `<output>.tmp-<pid>` files of dead processes; returns the names removed. */
export function removeStaleTemporaries(output: string): string[] {
  const prefix = `${basename(output)}.tmp-`;
  const removed: string[] = [];
  let names: string[];
  try {
    names = readdirSync(dirname(output));
  } catch {
    return removed;
  }
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const pid = Number(name.slice(prefix.length));
    if (!Number.isSafeInteger(pid) || pid <= 0 || pid === process.pid || alive(pid)) continue;
    rmSync(join(dirname(output), name), { force: true });
    removed.push(name);
  }
  return removed;
}
