// What the cluster test files share: a temporary directory with a models/ folder beside the
// fixtures, one real nats-server for the whole file, and the processes a test starts, stopped
// after each test (a hang or a leftover process never outlives its test). Call it at the top of
// a test file: it registers its own beforeAll/afterEach/afterAll, ahead of the file's.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { FIXTURE_MODELS } from './cli.js';
import { tempDir } from './models.js';
import { startNatsServer, type NatsTestServer } from './nats-server.js';
import { startCli, stopAll, type Proc } from './processes.js';

export interface ClusterFixture {
  readonly dir: string;
  /** models written by the file's tests; a worker's second model root */
  readonly modelsDir: string;
  /** the file's nats-server, started before its first test */
  readonly nats: NatsTestServer;
  /** processes of the running test, stopped (by their pid) after it */
  readonly procs: Proc[];
  /** `arrowquant worker` on the file's NATS, one lane and one thread, the fixtures and models/ as model roots; stopped after the test */
  worker(args?: string[], env?: NodeJS.ProcessEnv): Proc;
  /** A CLI process stopped after the test. */
  start(args: string[], env?: NodeJS.ProcessEnv): Proc;
}

/** `graceS`: the workers' --grace (default 5 s). */
export function clusterFixture(prefix: string, graceS = 5): ClusterFixture {
  const { dir, cleanup } = tempDir(prefix);
  const modelsDir = join(dir, 'models');
  let nats: NatsTestServer | null = null;
  const procs: Proc[] = [];
  const start = (args: string[], env: NodeJS.ProcessEnv = {}) => {
    const p = startCli(args, env);
    procs.push(p);
    return p;
  };
  beforeAll(async () => {
    mkdirSync(modelsDir);
    nats = await startNatsServer();
  });
  afterEach(async () => {
    await stopAll(procs.splice(0));
  });
  afterAll(async () => {
    await nats?.stop();
    cleanup();
  });
  return {
    dir,
    modelsDir,
    get nats() {
      if (!nats) throw new Error('the nats-server starts in beforeAll: use it inside a test or a hook');
      return nats;
    },
    procs,
    start,
    worker: (args = [], env = {}) =>
      start(['worker', '--nats', nats!.url, '--concurrency', '1', '--threads', '1', '--model-root', FIXTURE_MODELS, '--model-root', modelsDir, '--grace', String(graceS), ...args], env),
  };
}
