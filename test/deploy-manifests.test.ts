// The Kubernetes manifests as the cluster would receive them: every overlay and job rendered by
// `kubectl kustomize`, validated with kubernetes-models (types, required fields) and checked for
// fields the API does not know, then held to what deploy/README.md promises (pinned images,
// non-root read-only pods, the NetworkPolicy, probes, NATS topology, commands the CLI accepts).
// No cluster runs here: the render is what `kubectl apply -k` would send.
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { parseCommandLine } from '../cli/main.js';
import { FIXTURE_MODELS, ROOT, runCli } from './helpers/cli.js';
import { kustomize, modelErrors, podSpecs, unknownFieldErrors, type K8sObject } from './helpers/manifests.js';

const IN_CI = process.env.CI === 'true';
const HAVE_KUBECTL = spawnSync('kubectl', ['version', '--client']).status === 0;
if (!HAVE_KUBECTL && !IN_CI) console.warn('deploy manifest tests skipped: kubectl (with kustomize) is not installed');

const OVERLAYS = ['deploy/overlays/dev', 'deploy/overlays/prod'];
const JOBS = ['deploy/jobs/quantize', 'deploy/jobs/smoke-test', 'deploy/jobs/model-access'];
const VERSION = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version as string;

/** Names of the Secrets objects refer to (env secretKeyRef, envFrom secretRef, secret volumes). */
function referencedSecrets(objects: unknown): Set<string> {
  const found = new Set<string>();
  const walk = (v: any): void => {
    if (Array.isArray(v)) return v.forEach(walk);
    if (!v || typeof v !== 'object') return;
    if (v.secretKeyRef?.name) found.add(v.secretKeyRef.name);
    if (v.secretRef?.name) found.add(v.secretRef.name);
    if (v.secret?.secretName) found.add(v.secret.secretName);
    Object.values(v).forEach(walk);
  };
  walk(objects);
  return found;
}

describe.runIf(HAVE_KUBECTL || IN_CI)('deploy manifests', () => {
  const rendered = new Map<string, K8sObject[]>();
  const all = () => [...rendered.values()].flat();
  const find = (dir: string, kind: string, name: string) => {
    const o = rendered.get(dir)!.find((x) => x.kind === kind && x.metadata.name === name);
    if (!o) throw new Error(`${dir} renders no ${kind} ${name}`);
    return o;
  };

  beforeAll(() => {
    expect(HAVE_KUBECTL, 'kubectl is not installed (kubectl 1.32 with kustomize is needed)').toBe(true);
    for (const dir of [...OVERLAYS, ...JOBS]) rendered.set(dir, kustomize(dir));
  });

  test('deploy manifests - every overlay and job renders and validates with kubernetes-models', async () => {
    for (const [dir, objects] of rendered) {
      expect(objects.length, dir).toBeGreaterThan(0);
      const errors = (await Promise.all(objects.map(modelErrors))).flat();
      expect(errors, dir).toEqual([]);
    }
    // and the validators do reject: a Deployment without its selector, a kind with no model
    const worker = structuredClone(find('deploy/overlays/dev', 'Deployment', 'arrowquant-worker'));
    delete worker.spec.selector;
    expect(await modelErrors(worker)).toEqual(['Deployment arrowquant-worker: data/spec must have required property selector']);
    expect(await modelErrors({ apiVersion: 'v1', kind: 'Podd', metadata: { name: 'x' } })).toEqual(['Podd x: no kubernetes-models type for v1 Podd']);
  });

  test('deploy manifests - no field the Kubernetes API does not know, and the check does catch one', () => {
    expect(unknownFieldErrors(all())).toEqual([]);
    // the same check on a copy with a misspelt field and a wrong type: it must name both
    const worker = structuredClone(find('deploy/overlays/prod', 'Deployment', 'arrowquant-worker'));
    worker.spec.template.spec.containers[0].securityContext.readOnlyRootFilesytem = true;
    worker.spec.replicas = 'two';
    const errors = unknownFieldErrors([worker]).join('\n');
    expect(errors).toMatch(/Deployment arrowquant-worker: .*'"readOnlyRootFilesytem"' does not exist in type 'ISecurityContext'/);
    expect(errors).toMatch(/Deployment arrowquant-worker: .*Type 'string' is not assignable to type 'number'/);
  }, 60_000);

  test('deploy manifests - dev runs one worker and one NATS server; prod a 3-node JetStream StatefulSet, HPA and PDBs', () => {
    const devKinds = rendered.get('deploy/overlays/dev')!.map((o) => `${o.kind}/${o.metadata.name}`);
    expect(find('deploy/overlays/dev', 'Deployment', 'arrowquant-worker').spec.replicas).toBe(1);
    expect(find('deploy/overlays/dev', 'Deployment', 'nats').spec.replicas).toBe(1);
    expect(devKinds).not.toContain('StatefulSet/nats');
    expect(find('deploy/overlays/dev', 'ConfigMap', 'nats-config').data['nats.conf']).toMatch(/jetstream \{ store_dir: \/data\/jetstream/);

    const nats = find('deploy/overlays/prod', 'StatefulSet', 'nats');
    expect(nats.spec.replicas).toBe(3);
    expect(nats.spec.serviceName).toBe('nats-headless');
    expect(find('deploy/overlays/prod', 'Service', 'nats-headless').spec.clusterIP).toBe('None');
    expect(nats.spec.volumeClaimTemplates[0].metadata.name).toBe('data');
    expect(nats.spec.template.spec.containers[0].volumeMounts).toContainEqual({ name: 'data', mountPath: '/data' });
    const conf = find('deploy/overlays/prod', 'ConfigMap', 'nats-config').data['nats.conf'] as string;
    // one route per replica, by the headless Service's stable names
    const routes = [...conf.matchAll(/nats-route:\/\/(nats-\d)\.nats-headless:6222/g)].map((m) => m[1]);
    expect(routes).toEqual(['nats-0', 'nats-1', 'nats-2']);
    expect(conf).toMatch(/jetstream \{ store_dir: \/data\/jetstream/);

    const workers = find('deploy/overlays/prod', 'Deployment', 'arrowquant-worker');
    expect(workers.spec.replicas).toBeUndefined(); // the autoscaler owns it
    const hpa = find('deploy/overlays/prod', 'HorizontalPodAutoscaler', 'arrowquant-worker');
    expect(hpa.spec.scaleTargetRef).toEqual({ apiVersion: 'apps/v1', kind: 'Deployment', name: 'arrowquant-worker' });
    expect(hpa.spec.minReplicas).toBeGreaterThanOrEqual(2);
    for (const [name, selects] of [['arrowquant-worker', workers.spec.template.metadata.labels], ['nats', nats.spec.template.metadata.labels]]) {
      const pdb = find('deploy/overlays/prod', 'PodDisruptionBudget', name);
      expect(pdb.spec.maxUnavailable).toBe(1);
      expect(selects).toMatchObject(pdb.spec.selector.matchLabels);
    }
  });

  test('deploy manifests - every pod is non-root with a read-only root, no escalation, no capabilities and an fsGroup', () => {
    const pods = podSpecs(all());
    expect(pods.length).toBe(9); // 2 overlays × (workers + coordinator + NATS) + 3 jobs
    for (const { owner, spec } of pods) {
      expect(spec.securityContext, owner).toMatchObject({ runAsNonRoot: true, fsGroup: 1000 });
      expect(spec.securityContext.runAsUser, owner).toBeGreaterThan(0);
      expect(spec.automountServiceAccountToken, owner).toBe(false);
      for (const c of spec.containers) {
        expect(c.securityContext, `${owner} ${c.name}`).toEqual({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } });
        expect(c.resources.requests, `${owner} ${c.name}`).toBeDefined();
        expect(c.resources.limits.memory, `${owner} ${c.name}`).toBeDefined();
        // arrowquant containers get a writable /tmp (TMPDIR) on a volume
        if (c.image.startsWith('arrowquant:')) expect(c.volumeMounts.map((m: any) => m.mountPath), `${owner} ${c.name}`).toContain('/tmp');
      }
    }
  });

  test('deploy manifests - every image is pinned: kustomize images: reached every workload and the Dockerfile', () => {
    const images = podSpecs(all()).flatMap(({ spec }) => spec.containers.map((c: any) => c.image as string));
    for (const image of images) {
      expect(image).toMatch(/^[\w./-]+:[\w.-]+$/);
      expect(image).not.toMatch(/:latest$/);
    }
    expect(new Set(images.filter((i) => i.includes('arrowquant')))).toEqual(new Set([`arrowquant:${VERSION}`]));
    expect(new Set(images.filter((i) => i.includes('nats')))).toEqual(new Set(['docker.io/library/nats:2.10.24-alpine']));
    const froms = [...readFileSync(join(ROOT, 'deploy', 'Dockerfile'), 'utf8').matchAll(/^FROM (\S+)/gm)].map((m) => m[1]);
    expect(froms).toEqual(['docker.io/library/node:20.20.2-bookworm', 'docker.io/library/node:20.20.2-bookworm-slim']);
  });

  test('deploy manifests - workers reach only NATS, coordinator pods and DNS; probes and Prometheus use their ports', () => {
    for (const dir of OVERLAYS) {
      const worker = find(dir, 'Deployment', 'arrowquant-worker');
      const c = worker.spec.template.spec.containers[0];
      const healthPort = Number(c.args[c.args.indexOf('--health-listen') + 1].split(':')[1]);
      expect(c.readinessProbe.grpc.port).toBe(healthPort);
      expect(c.livenessProbe.grpc.port).toBe(healthPort);

      const policy = find(dir, 'NetworkPolicy', 'arrowquant-worker');
      expect(worker.spec.template.metadata.labels).toMatchObject(policy.spec.podSelector.matchLabels);
      expect(policy.spec.policyTypes).toEqual(['Ingress', 'Egress']);
      const metricsPort = Number(c.args[c.args.indexOf('--metrics-listen') + 1].split(':')[1]);
      expect(c.ports).toEqual([{ name: 'health', containerPort: healthPort }, { name: 'metrics', containerPort: metricsPort }]);
      expect(worker.spec.template.metadata.annotations['prometheus.io/port']).toBe(String(metricsPort));
      expect(policy.spec.ingress).toEqual([{ ports: [{ protocol: 'TCP', port: healthPort }, { protocol: 'TCP', port: metricsPort }] }]);
      const egress = policy.spec.egress.map((r: any) => ({ to: r.to.map((t: any) => t.podSelector.matchLabels), ports: r.ports.map((p: any) => `${p.protocol}/${p.port}`) }));
      expect(egress).toEqual([
        { to: [{ 'app.kubernetes.io/name': 'nats' }], ports: ['TCP/4222'] },
        { to: [{ 'app.kubernetes.io/name': 'arrowquant', 'app.kubernetes.io/component': 'coordinator' }], ports: ['TCP/7070'] },
        { to: [{ 'k8s-app': 'kube-dns' }], ports: ['UDP/53', 'TCP/53'] },
      ]);
      // what the rules point at is what runs: NATS pods on 4222, the NATS URL's port
      const natsPods = podSpecs(rendered.get(dir)!).filter((p) => p.labels['app.kubernetes.io/name'] === 'nats');
      expect(natsPods.length).toBe(1);
      expect(natsPods[0]!.spec.containers[0].ports).toContainEqual({ name: 'client', containerPort: 4222 });
      expect(find(dir, 'ConfigMap', 'arrowquant-config').data.ARROW_QUANT_NATS_URL).toMatch(/^(nats|tls):\/\/nats:4222$/);
    }
    // the jobs' coordinators carry the label the policy allows and listen on its port
    for (const dir of ['deploy/jobs/quantize', 'deploy/jobs/smoke-test']) {
      const [pod] = podSpecs(rendered.get(dir)!);
      expect(pod!.labels).toMatchObject({ 'app.kubernetes.io/name': 'arrowquant', 'app.kubernetes.io/component': 'coordinator' });
      const c = pod!.spec.containers[0];
      expect(c.args.join(' ')).toContain('--listen 0.0.0.0:7070');
      expect(c.ports).toContainEqual({ name: 'shards', containerPort: 7070 });
    }
  });

  test('deploy manifests - one coordinator service (Recreate) whose Service, probes, metrics and shard port match its flags', () => {
    const flag = (args: string[], name: string) => args[args.indexOf(name) + 1]!;
    const port = (hostPort: string) => Number(hostPort.split(':').at(-1));
    for (const dir of OVERLAYS) {
      const d = find(dir, 'Deployment', 'arrowquant-coordinator');
      expect(d.spec.replicas, dir).toBe(1);
      expect(d.spec.strategy, dir).toEqual({ type: 'Recreate' });
      const pod = d.spec.template;
      expect(pod.metadata.labels).toMatchObject(d.spec.selector.matchLabels);
      const c = pod.spec.containers[0];
      expect(c.args[0]).toBe('coordinator');
      const jobs = port(flag(c.args, '--listen'));
      const shards = port(flag(c.args, '--shard-listen'));
      const metrics = port(flag(c.args, '--metrics-listen'));
      expect(flag(c.args, '--advertise')).toBe(`$(POD_IP):${shards}`);
      expect(c.env).toContainEqual({ name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } });
      expect(c.env).toContainEqual({ name: 'ARROW_QUANT_COORDINATOR_TOKEN', valueFrom: { secretKeyRef: { name: 'arrowquant-coordinator-auth', key: 'token' } } });
      expect(c.ports).toEqual([{ name: 'jobs', containerPort: jobs }, { name: 'shards', containerPort: shards }, { name: 'metrics', containerPort: metrics }]);
      expect(c.readinessProbe.grpc.port).toBe(jobs); // the health service is on the job API's port
      expect(c.livenessProbe.grpc.port).toBe(jobs);
      expect(pod.metadata.annotations['prometheus.io/port']).toBe(String(metrics));
      // the workers' policy lets them reach this pod's shard port
      const policy = find(dir, 'NetworkPolicy', 'arrowquant-worker');
      const rule = policy.spec.egress.find((r: any) => r.to.some((t: any) => t.podSelector?.matchLabels?.['app.kubernetes.io/component'] === 'coordinator'));
      expect(pod.metadata.labels).toMatchObject(rule.to[0].podSelector.matchLabels);
      expect(rule.ports).toEqual([{ protocol: 'TCP', port: shards }]);
      // models read-only, outputs and staging on the output volume
      expect(c.volumeMounts).toContainEqual({ name: 'models', mountPath: flag(c.args, '--model-root'), readOnly: true });
      expect(c.volumeMounts).toContainEqual({ name: 'output', mountPath: flag(c.args, '--output-root') });
      expect(flag(c.args, '--data').startsWith(`${flag(c.args, '--output-root')}/`)).toBe(true);
      expect(pod.spec.volumes).toContainEqual({ name: 'models', persistentVolumeClaim: { claimName: 'arrowquant-models', readOnly: true } });
      expect(pod.spec.volumes).toContainEqual({ name: 'output', persistentVolumeClaim: { claimName: 'arrowquant-output' } });

      const svc = find(dir, 'Service', 'arrowquant-coordinator');
      expect(svc.spec.selector).toEqual(d.spec.selector.matchLabels);
      expect(svc.spec.ports).toEqual([
        { name: 'jobs', port: jobs, targetPort: 'jobs', appProtocol: 'grpc' },
        { name: 'metrics', port: metrics, targetPort: 'metrics' },
      ]);
    }
    // the Service does not send job API calls to a quantize Job's pod (also component: coordinator)
    const svc = find('deploy/overlays/dev', 'Service', 'arrowquant-coordinator');
    const [jobPod] = podSpecs(rendered.get('deploy/jobs/quantize')!);
    expect(Object.entries(svc.spec.selector).every(([k, v]) => jobPod!.labels[k] === v)).toBe(false);
  });

  test('deploy manifests - prod NATS and its clients use TLS; every Secret referenced is one deploy/README.md creates', () => {
    const config = find('deploy/overlays/prod', 'ConfigMap', 'arrowquant-config').data;
    expect(config.ARROW_QUANT_NATS_URL).toBe('tls://nats:4222');
    expect(config.ARROW_QUANT_NATS_TLS_CA).toBe('/etc/arrowquant/nats-tls/ca.crt');
    for (const { owner, spec } of podSpecs(all()).filter((p) => p.labels['app.kubernetes.io/name'] === 'arrowquant' && p.labels['app.kubernetes.io/component'] !== 'model-access')) {
      const tls = spec.volumes.find((v: any) => v.secret?.secretName === 'arrowquant-nats-tls');
      expect(tls, owner).toBeDefined();
      expect(spec.containers[0].volumeMounts, owner).toContainEqual({ name: tls.name, mountPath: '/etc/arrowquant/nats-tls', readOnly: true });
    }
    expect(find('deploy/overlays/prod', 'ConfigMap', 'nats-config').data['nats.conf']).toMatch(/tls \{\s+cert_file: \/etc\/nats\/tls\/tls\.crt/);

    expect(referencedSecrets(all())).toEqual(new Set(['arrowquant-coordinator-auth', 'arrowquant-nats-auth', 'arrowquant-nats-tls']));
    const readme = readFileSync(join(ROOT, 'deploy', 'README.md'), 'utf8');
    expect(readme).toMatch(/kubectl create secret generic arrowquant-nats-auth [^\n]*--from-literal=token=/);
    expect(readme).toMatch(/kubectl create secret generic arrowquant-coordinator-auth [^\n]*--from-literal=token=/);
    expect(readme).toMatch(/kubectl create secret generic arrowquant-nats-tls [^\n]*--from-file=ca\.crt=[^\n]*--from-file=tls\.crt=[^\n]*--from-file=tls\.key=/);
  });

  test('deploy manifests - every arrowquant command in them is accepted by the CLI; config keys are ones the code reads', async () => {
    const job = Object.fromEntries(readFileSync(join(ROOT, 'deploy', 'jobs', 'quantize', 'job.env'), 'utf8').trim().split('\n').map((l) => l.split('=', 2) as [string, string]));
    const vars: Record<string, string> = { ...job, POD_IP: '10.0.0.1' };
    const expand = (s: string) => s.replace(/\$\((\w+)\)|"\$(\w+)(:\d+)?"/g, (_, a, b, port) => (vars[a ?? b] ?? `<unset ${a ?? b}>`) + (port ?? ''));
    const commands: string[][] = [];
    for (const { spec } of podSpecs(all())) {
      for (const c of spec.containers.filter((x: any) => x.image.startsWith('arrowquant:'))) {
        if (c.command?.[0] === '/bin/sh') {
          for (const part of expand(c.args.join(' ')).split('&&')) {
            const words = part.trim().split(/\s+/);
            if (words[0] === 'arrowquant') commands.push(words.slice(1));
          }
        } else if (!c.command) {
          commands.push(c.args.map(expand));
        }
      }
    }
    expect(commands.map((c) => c[0]).sort()).toEqual(['coordinator', 'coordinator', 'quantize', 'quantize', 'sample-model', 'status', 'verify', 'worker', 'worker']);
    // parsed by the CLI's own parser up to the point where the command would run (with --help,
    // commander would not report unknown options)
    for (const args of commands) {
      let stderr = '';
      let reached = '';
      const usage = await parseCommandLine(args, { out: () => undefined, err: (s) => void (stderr += s) }, async (name) => void (reached = name));
      expect(usage, `arrowquant ${args.join(' ')}: ${stderr}`).toBeNull();
      expect(reached).toBe(args[0]);
    }
    // the quantize job's settings file is one the CLI accepts, planned on the test model
    const plan = await runCli(['plan', join(FIXTURE_MODELS, 'stories260K-bf16.safetensors'), '-c', join(ROOT, 'deploy', 'jobs', 'quantize', 'quantize.yaml')]);
    expect(plan.code, plan.stderr).toBe(0);
    expect(job.MODEL).toMatch(/^\/models\//);
    expect(job.OUTPUT).toMatch(/^\/output\/.+\.arrow$/);

    const sources = ['core', 'cli'].flatMap((d) => readdirSync(join(ROOT, d), { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts')).map((f) => readFileSync(join(ROOT, d, f), 'utf8'))).join('\n');
    for (const dir of OVERLAYS) {
      for (const key of Object.keys(find(dir, 'ConfigMap', 'arrowquant-config').data)) {
        const suffix = key.replace(/^ARROW_QUANT_NATS_/, '');
        expect(sources.includes(key) || sources.includes(`'${suffix}'`), `${dir}: ${key} is read by no code`).toBe(true);
      }
    }
  }, 120_000);
});
