// The deployment manifests: valid YAML, and every arrowquant command in them is one the CLI
// accepts (run with --help appended: unknown options or bad usage fail before help is printed).
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { loadAll } from 'js-yaml';
import { ROOT, runCli } from './helpers/cli.js';

const K8S = join(ROOT, 'deploy', 'k8s');
type Doc = { kind: string; metadata: { name: string }; spec?: any; data?: Record<string, string>; resources?: string[] };
const docs: Doc[] = readdirSync(K8S)
  .filter((f) => f.endsWith('.yaml'))
  .flatMap((f) => loadAll(readFileSync(join(K8S, f), 'utf8')) as Doc[]);

function containers(): { name: string; args: string[]; command?: string[]; ports?: { containerPort: number }[]; readinessProbe?: any }[] {
  return docs.flatMap((d) => d.spec?.template?.spec?.containers ?? []);
}

describe('deploy', () => {
  test('deploy - manifests parse and the kustomization lists existing files', () => {
    const kinds = docs.map((d) => d.kind).sort();
    expect(kinds).toEqual(expect.arrayContaining(['ConfigMap', 'Deployment', 'Job', 'Namespace', 'PersistentVolumeClaim', 'Secret']));
    const kust = docs.find((d) => d.kind === 'Kustomization')!;
    for (const r of kust.resources!) expect(readdirSync(K8S)).toContain(r);
  });

  test('deploy - every arrowquant command in the manifests is accepted by the CLI', async () => {
    const commands: string[][] = [];
    for (const c of containers()) {
      if (c.command) {
        // a shell script: its arrowquant invocations, with variables given a value
        const script = c.args.join(' ').replace(/"\$POD_IP"/g, '10.0.0.1');
        for (const part of script.split('&&')) {
          const words = part.trim().split(/\s+/);
          if (words[0] === 'arrowquant') commands.push(words.slice(1));
        }
      } else {
        commands.push(c.args.map((a) => a.replace('$(POD_IP)', '10.0.0.1')));
      }
    }
    expect(commands.map((c) => c[0])).toEqual(expect.arrayContaining(['worker', 'quantize', 'sample-model', 'verify', 'status']));
    for (const args of commands) {
      const r = await runCli([...args, '--help']);
      expect(r.code, `arrowquant ${args.join(' ')}: ${r.stderr}`).toBe(0);
    }
  });

  test('deploy - worker probes use the port its health service listens on; config keys are ones the code reads', () => {
    const worker = containers().find((c) => c.args[0] === 'worker')!;
    const port = Number(worker.args[worker.args.indexOf('--health-listen') + 1]!.split(':')[1]);
    expect(worker.readinessProbe.grpc.port).toBe(port);
    const config = docs.find((d) => d.kind === 'ConfigMap')!;
    const sources = ['core/cluster/nats-options.ts', 'core/cluster/jetstream-setup.ts'].map((f) => readFileSync(join(ROOT, f), 'utf8')).join('\n');
    for (const key of Object.keys(config.data!)) {
      const suffix = key.replace(/^ARROW_QUANT_NATS_/, '');
      expect(sources.includes(key) || sources.includes(`'${suffix}'`), key).toBe(true);
    }
  });
});
