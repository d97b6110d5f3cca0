// The deployment manifests as Kubernetes gets them (rendered with `kubectl kustomize` when kubectl
// is installed), and every arrowquant command in them parsed by the real CLI parser with the
// options and values it would run with.
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { loadAll } from 'js-yaml';
import { parseCommandLine } from '../cli/main.js';
import type { OptionValues } from '../cli/program.js';
import { natsOptionsFrom } from '../core/cluster/nats-options.js';
import { taskQueueSettings } from '../core/cluster/jetstream-setup.js';
import { ROOT } from './helpers/cli.js';

const K8S = join(ROOT, 'deploy', 'k8s');
type Container = { name: string; args: string[]; command?: string[]; ports?: { containerPort: number }[]; readinessProbe?: any; envFrom?: any[] };
type Doc = { kind: string; metadata: { name: string; namespace?: string }; spec?: any; data?: Record<string, string>; stringData?: Record<string, string>; resources?: string[] };

const files = readdirSync(K8S).filter((f) => f.endsWith('.yaml'));
const fileDocs = (f: string) => loadAll(readFileSync(join(K8S, f), 'utf8')) as Doc[];
const kustomization = fileDocs('kustomization.yaml')[0]!;

function hasKubectl(): boolean {
  try {
    execFileSync('kubectl', ['version', '--client'], { stdio: 'ignore', timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
}

/** What `kubectl apply -k deploy/k8s` applies (rendered by kubectl when present), plus the manifests applied on their own. */
const KUBECTL = hasKubectl();
const rendered: Doc[] = KUBECTL
  ? (loadAll(execFileSync('kubectl', ['kustomize', K8S], { encoding: 'utf8', timeout: 60_000 })) as Doc[])
  : kustomization.resources!.flatMap(fileDocs);
const standalone = files.filter((f) => f !== 'kustomization.yaml' && !kustomization.resources!.includes(f)).flatMap(fileDocs);
const docs = [...rendered, ...standalone];
const containers = (): Container[] => docs.flatMap((d) => d.spec?.template?.spec?.containers ?? []);

/** The arrowquant argv of a container: its args, or each `arrowquant …` of its shell script. */
function commandsOf(c: Container): string[][] {
  if (!c.command) return [c.args.map((a) => a.replace('$(POD_IP)', '10.0.0.1'))];
  const script = c.args.join(' ').replace(/"\$POD_IP"/g, '10.0.0.1');
  return script.split('&&').map((part) => part.trim().split(/\s+/)).filter((w) => w[0] === 'arrowquant').map((w) => w.slice(1));
}

async function parse(argv: string[]): Promise<{ name: string; args: string[]; values: OptionValues; stderr: string }> {
  let stderr = '';
  let got: { name: string; args: string[]; values: OptionValues } | null = null;
  const code = await parseCommandLine(argv, { out: () => undefined, err: (t) => void (stderr += t) }, async (name, _load, args, values) => {
    got = { name, args, values };
  });
  expect(code, `arrowquant ${argv.join(' ')}: ${stderr}`).toBeNull();
  return { ...got!, stderr };
}

describe('deploy', () => {
  test('deploy - the kustomization renders the resources it lists, in its namespace', () => {
    for (const r of kustomization.resources!) expect(files).toContain(r);
    const kinds = rendered.map((d) => d.kind).sort();
    expect(kinds).toEqual(expect.arrayContaining(['ConfigMap', 'Deployment', 'Namespace', 'PersistentVolumeClaim', 'Secret']));
    if (KUBECTL) {
      for (const d of rendered.filter((x) => x.kind !== 'Namespace')) expect(d.metadata.namespace, `${d.kind}/${d.metadata.name}`).toBe('arrowquant');
      const worker = rendered.find((d) => d.kind === 'Deployment')!;
      expect(worker.spec.template.spec.containers[0].image).toBe('arrowquant:0.1.0');
    }
    expect(standalone.map((d) => d.kind)).toEqual(expect.arrayContaining(['Job']));
  });

  test('deploy - every arrowquant command in the manifests parses, with the values it states', async () => {
    const parsed = [];
    for (const c of containers()) for (const argv of commandsOf(c)) parsed.push(await parse(argv));
    expect(parsed.map((p) => p.name).sort()).toEqual(['quantize', 'quantize', 'sample-model', 'status', 'verify', 'worker']);
    const worker = parsed.find((p) => p.name === 'worker')!;
    expect(worker.values).toMatchObject({ concurrency: 2, threads: 0, 'model-root': ['/models'], 'work-dir': '/scratch', grace: 60, 'health-listen': '0.0.0.0:8081' });
    const job = parsed.find((p) => p.name === 'quantize' && p.args[0] === '/models/llama-2-7b')!;
    expect(job.values).toMatchObject({ output: '/output/llama-2-7b.arrow', 'mixed-precision': true, 'target-size-mb': '3500', listen: '0.0.0.0:7070', advertise: '10.0.0.1', json: true });
    const smoke = parsed.find((p) => p.name === 'quantize' && p.args[0] === '/scratch/sample.safetensors')!;
    expect(smoke.values).toMatchObject({ 'allow-download': true, listen: '0.0.0.0:7070' });
    expect(parsed.find((p) => p.name === 'verify')!.values).toMatchObject({ against: '/scratch/sample.safetensors' });
    expect(parsed.find((p) => p.name === 'sample-model')!.values).toMatchObject({ layers: 2 });
  });

  test('deploy - worker probes use the port its health service listens on; every config key changes what the code does', () => {
    const worker = containers().find((c) => c.args[0] === 'worker')!;
    const port = Number(worker.args[worker.args.indexOf('--health-listen') + 1]!.split(':')[1]);
    expect(worker.readinessProbe.grpc.port).toBe(port);
    const env: Record<string, string> = {
      ...docs.find((d) => d.kind === 'ConfigMap')!.data,
      ...docs.find((d) => d.kind === 'Secret')!.stringData,
    };
    // what the cluster code derives from the environment; each key must change it when changed
    const derived = (e: NodeJS.ProcessEnv) => JSON.stringify({ nats: natsOptionsFrom({}, e, 'probe'), queue: taskQueueSettings(e) });
    for (const key of Object.keys(env)) {
      const other = /^\d+$/.test(env[key]!) ? String(Number(env[key]) * 2 + 1) : key.endsWith('_URL') ? 'nats://elsewhere:4222' : 'changed';
      expect(derived({ ...env, [key]: other }), key).not.toBe(derived(env));
    }
    expect(natsOptionsFrom({}, env, 'probe')!.servers).toEqual(['nats://nats.nats.svc:4222']);
    expect(taskQueueSettings(env)).toEqual({ ackWaitMs: 30_000, maxDeliver: 5 });
  });
});
