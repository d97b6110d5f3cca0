// The production image, built for real from deploy/Dockerfile with podman (no registry needed:
// deploy/podman/build-image.sh makes the base images and fills an offline npm cache), run the
// way the Kubernetes manifests run it: non-root, read-only root filesystem, no capabilities.
// Without podman these tests are skipped with a message — except in CI, where that is a failure.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { FIXTURE_MODELS, ROOT, runCli } from './helpers/cli.js';
import { exec as run } from './helpers/podman.js';

const VERSION = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version as string;
const IMAGE = `localhost/arrowquant:${VERSION}`;
const BUILD_STAGE = `localhost/arrowquant-build:${VERSION}`;
const IN_CI = process.env.CI === 'true';
const HAVE_PODMAN = spawnSync('podman', ['--version']).status === 0;
if (!HAVE_PODMAN && !IN_CI) console.warn('container image tests skipped: podman is not installed (deploy/podman/setup.sh installs it)');

/** `podman run` with the restrictions the manifests' securityContext sets, and the given mounts. */
function podmanRun(mounts: string[], entrypoint: string[], args: string[] = []) {
  const [ep, ...epArgs] = entrypoint;
  return run('podman', [
    'run', '--rm', '--pull=never', '--network=none',
    '--read-only', '--read-only-tmpfs=false', '--cap-drop=all', '--security-opt=no-new-privileges',
    ...mounts.flatMap((m) => ['-v', m]),
    ...(ep ? ['--entrypoint', ep] : []),
    IMAGE, ...epArgs, ...args,
  ], 120_000);
}

const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

describe.runIf(HAVE_PODMAN || IN_CI)('container image', () => {
  let scratch = '';

  beforeAll(async () => {
    expect(HAVE_PODMAN, 'podman is not installed: .ci/run installs it with deploy/podman/setup.sh').toBe(true);
    // The first build takes about two minutes (base images + npm cache); later ones reuse podman's layers.
    for (const args of [[IMAGE], [BUILD_STAGE, '--target', 'build']]) {
      const r = await run(join(ROOT, 'deploy', 'podman', 'build-image.sh'), args, 600_000);
      expect(r.code, `build-image.sh ${args.join(' ')}:\n${r.stderr}`).toBe(0);
    }
    scratch = mkdtempSync(join(tmpdir(), 'arrowquant-image-'));
    // the container's uid 1000 writes here, as fsGroup makes volumes writable in the cluster
    chmodSync(scratch, 0o1777);
  }, 900_000);

  afterAll(() => {
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  test('container image - runs as uid 1000 and its root filesystem refuses writes', async () => {
    const config = JSON.parse((await run('podman', ['image', 'inspect', IMAGE], 30_000)).stdout)[0].Config;
    expect(config.User).toBe('1000:1000');
    expect(config.Entrypoint).toEqual(['arrowquant']);
    expect(config.Env).toEqual(expect.arrayContaining(['TMPDIR=/tmp', 'NODE_ENV=production']));
    const id = await podmanRun([], ['id', '-u']);
    expect(id.stdout.trim()).toBe('1000');
    const write = await podmanRun([], ['sh', '-c', 'touch /app/probe']);
    expect(write.code).not.toBe(0);
    expect(write.stderr).toMatch(/Read-only file system|Permission denied/);
    const version = await podmanRun([], [], ['--version']);
    expect(version.code, version.stderr).toBe(0);
    expect(version.stdout).toMatch(new RegExp(`^arrowquant ${VERSION.replace(/\./g, '\\.')}\\n`));
    // the addon built in the image loaded (no fallback to the TypeScript reference kernels)
    expect(version.stdout).toMatch(/native variants compiled: scalar, avx2, avx512/);
    // the worker's runtime dependencies survived npm prune (prom-client for --metrics-listen)
    const worker = await podmanRun([], [], ['worker', '--nats', 'nats://127.0.0.1:4222', '--metrics-listen', 'nowhere']);
    expect(worker.code).toBe(2);
    expect(worker.stderr).toContain('--metrics-listen: expected HOST:PORT (port 0-65535), got "nowhere"');
  });

  test('container image - quantizes stories260K BF16 read-only, to the same bytes as a host run', async () => {
    const host = join(scratch, 'host.arrow');
    const hostRun = await runCli(['quantize', join(FIXTURE_MODELS, 'stories260K-bf16.safetensors'), '-o', host, '--mixed-precision']);
    expect(hostRun.code, hostRun.stderr).toBe(0);
    const tmp = join(scratch, 'tmp');
    mkdirSync(tmp);
    chmodSync(tmp, 0o1777);
    const inImage = await podmanRun(
      [`${FIXTURE_MODELS}:/models:ro`, `${scratch}:/out`, `${tmp}:/tmp`],
      [],
      ['quantize', '/models/stories260K-bf16.safetensors', '-o', '/out/container.arrow', '--mixed-precision'],
    );
    expect(inImage.code, inImage.stderr).toBe(0);
    expect(inImage.stderr).toMatch(/wrote \/out\/container\.arrow/);
    expect(sha256(join(scratch, 'container.arrow'))).toBe(sha256(host));
  });

  test('container image - an output on the read-only root is a clear error with exit 1 and no file', async () => {
    const r = await podmanRun([`${FIXTURE_MODELS}:/models:ro`], [], ['quantize', '/models/stories260K-bf16.safetensors', '-o', '/app/out.arrow']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('arrowquant quantize: cannot write /app/out.arrow: directory /app is not writable');
    const ls = await podmanRun([], ['ls', '/app']);
    expect(ls.stdout.split('\n').filter(Boolean)).toEqual(['dist', 'native', 'node_modules', 'package.json', 'proto']);
  });

  test('container image - the build context leaves out the host build, .git, tests and caches', async () => {
    const r = await run('podman', ['run', '--rm', '--pull=never', '--network=none', '--entrypoint', 'ls', BUILD_STAGE, '-A', '/app'], 60_000);
    expect(r.code, r.stderr).toBe(0);
    const entries = r.stdout.split('\n').filter(Boolean);
    for (const excluded of ['.git', '.cache', '.ci', 'test', 'deploy', '.bench']) expect(entries).not.toContain(excluded);
    expect(entries).toEqual(expect.arrayContaining(['cli', 'core', 'coordinator', 'worker', 'native', 'proto', 'dist', 'node_modules']));
  });
});
