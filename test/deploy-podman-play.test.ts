// The dev overlay run for real with `podman kube play`: its NATS and worker Deployments and the
// quantize Job's pod, as rendered by kustomize, on a network of their own, quantize the test model
// to the same bytes as a host run. What podman 4.3 cannot play is substituted, and only that:
//   - Secrets (broken in kube play): the token becomes a literal env value; the optional NATS TLS
//     secret volume is dropped (kube play ignores `optional`).
//   - PersistentVolumeClaims: hostPath directories of this test (models = test/fixtures, read-only).
//   - the Job (skipped by kube play): its pod template played as a Pod.
//   - Services (skipped): pods reach each other by pod name, so the NATS URL names NATS' pod.
//   - status.podIP: the coordinator advertises its pod name.
//   - $(VAR) in args: expanded here from env and envFrom, as the kubelet does (kube play does not).
//   - ConfigMaps: named with this run's id, as kube play keeps them as podman volumes afterwards
//     (removed at the end).
//   - images: the image built from deploy/Dockerfile; for NATS Debian's nats-server (2.9), as no
//     registry serves the official image here.
// Without podman this is skipped with a message; in CI (CI=true) that is a failure.
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { dump } from 'js-yaml';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ROOT, runCli } from './helpers/cli.js';
import { kustomize, type K8sObject } from './helpers/manifests.js';
import { tempDir } from './helpers/models.js';
import { exec, podman, waitForLog } from './helpers/podman.js';

const VERSION = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version as string;
const IN_CI = process.env.CI === 'true';
const HAVE_PODMAN = spawnSync('podman', ['--version']).status === 0;
const HAVE_KUBECTL = spawnSync('kubectl', ['version', '--client']).status === 0;
if (!(HAVE_PODMAN && HAVE_KUBECTL) && !IN_CI) console.warn('podman kube play test skipped: needs podman and kubectl');

const RUN = randomBytes(3).toString('hex');
const NETWORK = `arrowquant-play-${RUN}`;
const TOKEN = randomBytes(16).toString('hex');
const { dir, cleanup } = tempDir('aq-play-');

const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

/** A pod spec with the substitutions listed at the top of this file. */
function playable(spec: any, env: Record<string, string>, hostPaths: Record<string, string>, configMaps: K8sObject[] = []): any {
  const s = structuredClone(spec);
  s.volumes = s.volumes
    .filter((v: any) => !v.secret)
    .map((v: any) => (v.persistentVolumeClaim ? { name: v.name, hostPath: { path: hostPaths[v.persistentVolumeClaim.claimName], type: 'Directory' } } : v));
  for (const c of s.containers) {
    c.image = c.image.startsWith('arrowquant:') ? `localhost/arrowquant:${VERSION}` : 'localhost/nats-server:bookworm';
    c.volumeMounts = c.volumeMounts.filter((m: any) => s.volumes.some((v: any) => v.name === m.name));
    c.env = (c.env ?? []).map((e: any) => (e.name in env ? { name: e.name, value: env[e.name] } : e));
    const vars: Record<string, string> = Object.assign(
      {},
      ...(c.envFrom ?? []).map((f: any) => configMaps.find((m) => m.metadata.name === f.configMapRef?.name)?.data ?? {}),
      Object.fromEntries(c.env.filter((e: any) => 'value' in e).map((e: any) => [e.name, e.value])),
    );
    c.args = c.args?.map((a: string) => a.replace(/\$\((\w+)\)/g, (ref, name) => vars[name] ?? ref));
    delete c.readinessProbe; // grpc/http probes: podman 4.3 plays none of these
    delete c.livenessProbe;
  }
  return s;
}

describe.runIf((HAVE_PODMAN && HAVE_KUBECTL) || IN_CI)('deploy podman play', () => {
  const files: string[] = [];
  const volumes: string[] = [];
  const natsPod = `nats-${RUN}-pod-0`;

  beforeAll(async () => {
    expect(HAVE_PODMAN && HAVE_KUBECTL, 'podman and kubectl are needed: .ci/run installs podman (deploy/podman/setup.sh)').toBe(true);
    const built = await exec(join(ROOT, 'deploy', 'podman', 'build-image.sh'), [], 600_000);
    expect(built.code, built.stderr).toBe(0);
    expect((await podman(['network', 'create', NETWORK], 60_000)).code).toBe(0);
  }, 900_000);

  afterAll(async () => {
    for (const f of files.reverse()) await podman(['kube', 'down', f], 120_000).catch(() => undefined);
    if (volumes.length) await podman(['volume', 'rm', '-f', ...volumes], 60_000).catch(() => undefined);
    await podman(['network', 'rm', '-f', NETWORK], 60_000).catch(() => undefined);
    cleanup();
  }, 300_000);

  test('deploy podman play - the dev overlay\'s NATS and worker and the quantize job\'s pod write the host run\'s bytes', async () => {
    const dev = kustomize('deploy/overlays/dev');
    const job = kustomize('deploy/jobs/quantize');
    const get = (objects: K8sObject[], kind: string, name: string) => objects.find((o) => o.kind === kind && o.metadata.name === name)!;
    const hostPaths: Record<string, string> = { 'arrowquant-models': join(ROOT, 'test', 'fixtures'), 'arrowquant-output': join(dir, 'output'), 'nats-data': join(dir, 'nats') };
    for (const p of [hostPaths['arrowquant-output']!, hostPaths['nats-data']!]) {
      mkdirSync(p);
      chmodSync(p, 0o1777); // what fsGroup does for a cluster volume
    }
    const config = structuredClone(get(dev, 'ConfigMap', 'arrowquant-config'));
    config.data.ARROW_QUANT_NATS_URL = `nats://${natsPod}:4222`;
    const env = { ARROW_QUANT_NATS_TOKEN: TOKEN, NATS_TOKEN: TOKEN, POD_IP: `coordinator-${RUN}` };
    const deployment = (name: string, newName: string) => {
      const d = structuredClone(get(dev, 'Deployment', name));
      d.metadata.name = newName;
      d.spec.template.spec = playable(d.spec.template.spec, env, hostPaths);
      return d;
    };
    const play = async (name: string, objects: any[]) => {
      const file = join(dir, `${name}.yaml`);
      const own = (n: string) => `${n}-${RUN}`;
      const renamed = objects.map((o) => {
        const c = structuredClone(o);
        if (c.kind === 'ConfigMap') c.metadata.name = own(c.metadata.name);
        const spec = c.kind === 'Pod' ? c.spec : c.spec?.template?.spec;
        for (const v of spec?.volumes ?? []) if (v.configMap) volumes.push((v.configMap.name = own(v.configMap.name)));
        for (const f of spec?.containers.flatMap((x: any) => x.envFrom ?? []) ?? []) if (f.configMapRef) f.configMapRef.name = own(f.configMapRef.name);
        return c;
      });
      writeFileSync(file, renamed.map((o) => dump(o)).join('---\n'));
      files.push(file);
      const r = await podman(['kube', 'play', '--network', NETWORK, file], 300_000);
      expect(r.code, r.stdout + r.stderr).toBe(0);
    };

    await play('nats', [get(dev, 'ConfigMap', 'nats-config'), deployment('nats', `nats-${RUN}`)]);
    await waitForLog(`${natsPod}-nats`, /Server is ready/, 60_000);
    await play('worker', [config, deployment('arrowquant-worker', `arrowquant-worker-${RUN}`)]);
    await waitForLog(`arrowquant-worker-${RUN}-pod-0-worker`, /worker \S+: ready/, 120_000);
    // played with the manifests' securityContext: uid 1000, read-only root, no capabilities
    const inspected = JSON.parse((await podman(['inspect', `arrowquant-worker-${RUN}-pod-0-worker`], 60_000)).stdout)[0];
    expect(inspected.Config.User).toBe('1000:1000');
    expect(inspected.HostConfig.ReadonlyRootfs).toBe(true);
    expect(inspected.HostConfig.CapDrop).toEqual(expect.arrayContaining(['CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_NET_RAW', 'CAP_SETUID', 'CAP_SYS_CHROOT']));

    // the quantize Job's pod, with the job's settings as its generated ConfigMap holds them
    const jobObj = get(job, 'Job', 'arrowquant-quantize');
    const jobConfig = job.find((o) => o.kind === 'ConfigMap')!;
    const pod = {
      apiVersion: 'v1', kind: 'Pod',
      metadata: { name: `coordinator-${RUN}`, labels: jobObj.spec.template.metadata.labels },
      spec: { ...playable(jobObj.spec.template.spec, env, hostPaths, [config, jobConfig]), restartPolicy: 'Never' },
    };
    await play('coordinator', [config, jobConfig, pod]);
    const container = `coordinator-${RUN}-coordinator`;
    const waited = await podman(['wait', container], 300_000);
    const logs = await podman(['logs', container], 60_000);
    expect(waited.stdout.trim(), logs.stderr).toBe('0');
    const summary = JSON.parse(logs.stdout);
    expect(summary).toMatchObject({ mode: 'cluster', layers: 48 });

    const model = /^MODEL=(.+)$/m.exec(readFileSync(join(ROOT, 'deploy', 'jobs', 'quantize', 'job.env'), 'utf8'))![1]!;
    const host = join(dir, 'host.arrow');
    const local = await runCli(['quantize', join(ROOT, 'test', 'fixtures', model.replace(/^\/models\//, '')), '-o', host, '-c', join(ROOT, 'deploy', 'jobs', 'quantize', 'quantize.yaml')]);
    expect(local.code, local.stderr).toBe(0);
    const output = /^OUTPUT=\/output\/(.+)$/m.exec(readFileSync(join(ROOT, 'deploy', 'jobs', 'quantize', 'job.env'), 'utf8'))![1]!;
    expect(sha256(join(hostPaths['arrowquant-output']!, output))).toBe(sha256(host));
  }, 600_000);
});
