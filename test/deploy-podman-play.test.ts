// The dev overlay run for real with `podman kube play`: its NATS, worker and coordinator
// Deployments, as rendered by kustomize, on a network of their own. The quantize Job's pod, and a
// job submitted from the host with `arrowquant submit` to the coordinator Deployment, each write
// the same bytes as a host run; the coordinator's /metrics count that job. What podman 4.3 cannot
// play is substituted, and only that:
//   - Secrets (broken in kube play): the NATS and coordinator tokens become literal env values; the
//     optional NATS TLS secret volume is dropped (kube play ignores `optional`).
//   - PersistentVolumeClaims: hostPath directories of this test (models = test/fixtures, read-only).
//   - the Job (skipped by kube play): its pod template played as a Pod.
//   - Services (skipped): pods reach each other by pod name, so the NATS URL names NATS' pod; the
//     coordinator Service's job API and metrics ports are published instead with hostPort on
//     127.0.0.1 (free ports), as `kubectl port-forward svc/arrowquant-coordinator` would.
//   - status.podIP: a coordinator advertises its pod name.
//   - $(VAR) in args: expanded here from env and envFrom, as the kubelet does (kube play does not).
//   - probes (grpc): dropped, podman 4.3 plays none; readiness is waited for on the pods' logs.
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
import { freePort } from './helpers/nats-server.js';
import { exec, podman, waitForLog } from './helpers/podman.js';

const VERSION = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version as string;
const IN_CI = process.env.CI === 'true';
const HAVE_PODMAN = spawnSync('podman', ['--version']).status === 0;
const HAVE_KUBECTL = spawnSync('kubectl', ['version', '--client']).status === 0;
if (!(HAVE_PODMAN && HAVE_KUBECTL) && !IN_CI) console.warn('podman kube play test skipped: needs podman and kubectl');

const RUN = randomBytes(3).toString('hex');
const NETWORK = `arrowquant-play-${RUN}`;
// NATS reads $NATS_TOKEN as a config value: one starting with a digit is parsed as a number and
// refused, so tokens start with a letter (as deploy/README.md makes them).
const TOKEN = `t${randomBytes(16).toString('hex')}`;
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
  // rendered in beforeAll: without kubectl this suite is skipped but still collected
  let dev: K8sObject[] = [];
  let job: K8sObject[] = [];
  let config: any;
  const get = (objects: K8sObject[], kind: string, name: string) => objects.find((o) => o.kind === kind && o.metadata.name === name)!;
  const hostPaths: Record<string, string> = { 'arrowquant-models': join(ROOT, 'test', 'fixtures'), 'arrowquant-output': join(dir, 'output'), 'nats-data': join(dir, 'nats') };
  const coordinatorPod = `arrowquant-coordinator-${RUN}-pod-0`;
  const env = { ARROW_QUANT_NATS_TOKEN: TOKEN, NATS_TOKEN: TOKEN, ARROW_QUANT_COORDINATOR_TOKEN: TOKEN, POD_IP: `coordinator-${RUN}` };
  const deployment = (name: string, newName: string, podEnv: Record<string, string> = env) => {
    const d = structuredClone(get(dev, 'Deployment', name));
    d.metadata.name = newName;
    d.spec.template.spec = playable(d.spec.template.spec, podEnv, hostPaths);
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
  /** The host run of deploy/jobs/quantize's settings on the test model: the bytes every cluster run must write. */
  const jobEnv = readFileSync(join(ROOT, 'deploy', 'jobs', 'quantize', 'job.env'), 'utf8');
  const model = /^MODEL=(.+)$/m.exec(jobEnv)![1]!;
  const hostRun = join(dir, 'host.arrow');

  beforeAll(async () => {
    expect(HAVE_PODMAN && HAVE_KUBECTL, 'podman and kubectl are needed: .ci/run installs podman (deploy/podman/setup.sh)').toBe(true);
    dev = kustomize('deploy/overlays/dev');
    job = kustomize('deploy/jobs/quantize');
    config = structuredClone(get(dev, 'ConfigMap', 'arrowquant-config'));
    config.data.ARROW_QUANT_NATS_URL = `nats://${natsPod}:4222`;
    const built = await exec(join(ROOT, 'deploy', 'podman', 'build-image.sh'), [], 600_000);
    expect(built.code, built.stderr).toBe(0);
    expect((await podman(['network', 'create', NETWORK], 60_000)).code).toBe(0);
    for (const p of [hostPaths['arrowquant-output']!, hostPaths['nats-data']!]) {
      mkdirSync(p);
      chmodSync(p, 0o1777); // what fsGroup does for a cluster volume
    }
    const local = await runCli(['quantize', join(ROOT, 'test', 'fixtures', model.replace(/^\/models\//, '')), '-o', hostRun, '-c', join(ROOT, 'deploy', 'jobs', 'quantize', 'quantize.yaml')]);
    expect(local.code, local.stderr).toBe(0);

    // the dev overlay's NATS and worker, shared by both tests
    await play('nats', [get(dev, 'ConfigMap', 'nats-config'), deployment('nats', `nats-${RUN}`)]);
    await waitForLog(`${natsPod}-nats`, /Server is ready/, 60_000);
    await play('worker', [config, deployment('arrowquant-worker', `arrowquant-worker-${RUN}`)]);
    await waitForLog(`arrowquant-worker-${RUN}-pod-0-worker`, /worker \S+: ready/, 120_000);
  }, 900_000);

  afterAll(async () => {
    for (const f of files.reverse()) await podman(['kube', 'down', f], 120_000).catch(() => undefined);
    if (volumes.length) await podman(['volume', 'rm', '-f', ...volumes], 60_000).catch(() => undefined);
    await podman(['network', 'rm', '-f', NETWORK], 60_000).catch(() => undefined);
    cleanup();
  }, 300_000);

  test('deploy podman play - the dev overlay\'s NATS and worker and the quantize job\'s pod write the host run\'s bytes', async () => {
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

    const output = /^OUTPUT=\/output\/(.+)$/m.exec(jobEnv)![1]!;
    expect(sha256(join(hostPaths['arrowquant-output']!, output))).toBe(sha256(hostRun));
  }, 600_000);

  test('deploy podman play - the dev overlay\'s coordinator Deployment runs a job submitted from the host: the host run\'s bytes, counted in its metrics', async () => {
    // its job API and metrics published on loopback (hostPort + hostIP), as a port-forward would
    const [jobsPort, metricsPort] = [await freePort(), await freePort()];
    const d = deployment('arrowquant-coordinator', `arrowquant-coordinator-${RUN}`, { ...env, POD_IP: coordinatorPod });
    const c = d.spec.template.spec.containers[0];
    const published: Record<string, number> = { jobs: jobsPort, metrics: metricsPort };
    c.ports = c.ports.map((p: any) => (p.name in published ? { ...p, hostPort: published[p.name], hostIP: '127.0.0.1' } : p));
    await play('coordinator-service', [config, d]);
    const container = `${coordinatorPod}-coordinator`;
    await waitForLog(container, /job API listening on/, 120_000);
    const inspected = JSON.parse((await podman(['inspect', container], 60_000)).stdout)[0];
    expect(inspected.Config.User).toBe('1000:1000');
    expect(inspected.HostConfig.ReadonlyRootfs).toBe(true);

    const coordinator = ['--coordinator', `127.0.0.1:${jobsPort}`];
    const settings = ['-c', join(ROOT, 'deploy', 'jobs', 'quantize', 'quantize.yaml')];
    // the bearer token is required: without it the job API refuses the submit
    const refused = await runCli(['submit', model, '-o', 'refused.arrow', ...coordinator, ...settings], { env: { ARROW_QUANT_COORDINATOR_TOKEN: '' } });
    expect(refused.code, refused.stderr).toBe(2);
    expect(refused.stderr).toMatch(/UNAUTHENTICATED: missing "authorization: Bearer <token>" metadata/);

    const r = await runCli(['submit', model, '-o', '/output/submitted.arrow', ...coordinator, ...settings, '--json'], { env: { ARROW_QUANT_COORDINATOR_TOKEN: TOKEN }, timeoutMs: 300_000 });
    expect(r.code, r.stderr + (await podman(['logs', container], 60_000)).stderr).toBe(0);
    const events = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    const last = events[events.length - 1];
    expect(last).toMatchObject({ final: true, job: { state: 'done', result: { exit_code: 0 }, progress: { layers_done: 48, layers_total: 48 } } });
    const summary = JSON.parse(last.job.result.summary_json);
    expect(summary).toMatchObject({ mode: 'cluster', layers: 48 });

    // the output on the output volume (a hostPath here), written by the pod as uid 1000
    expect(sha256(join(hostPaths['arrowquant-output']!, 'submitted.arrow'))).toBe(sha256(hostRun));
    const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    expect(text).toMatch(/^arrowquant_coordinator_layers_done_total 48$/m);
    expect(text).toMatch(new RegExp(`^arrowquant_coordinator_bytes_out_total ${summary.bytes_out}$`, 'm'));
    expect(text).toMatch(/^arrowquant_coordinator_jobs\{state="done"\} 1$/m);
    expect(text).toMatch(/^arrowquant_coordinator_queue_depth 0$/m);
    expect(text).toMatch(/^arrowquant_coordinator_layer_duration_seconds_count 48$/m);
    expect(text).toMatch(/^arrowquant_coordinator_uploads_in_flight 0$/m);
  }, 600_000);
});
