// Rendering and checking Kubernetes manifests offline: `kubectl kustomize`, kubernetes-models'
// validators (types, required fields, formats), and an unknown-field check by TypeScript's
// excess-property rule on the rendered objects typed as kubernetes-models' interfaces.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { loadAll } from 'js-yaml';
import ts from 'typescript';
import { ROOT } from './cli.js';

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string> };
  [field: string]: any;
}

export function kustomize(dir: string): K8sObject[] {
  const r = spawnSync('kubectl', ['kustomize', join(ROOT, dir)], { encoding: 'utf8', timeout: 60_000, killSignal: 'SIGKILL' });
  if (r.error) throw new Error(`kubectl kustomize ${dir}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`kubectl kustomize ${dir} failed (exit ${r.status}): ${r.stderr}`);
  return (loadAll(r.stdout) as (K8sObject | null)[]).filter((d): d is K8sObject => d !== null);
}

/** kubernetes-models' module for a kind: kubernetes-models/<apiVersion>/<Kind> ('v1' is the core group). */
const modelModule = (o: K8sObject) => `kubernetes-models/${o.apiVersion}/${o.kind}`;

/** Validates with the kubernetes-models class of the object's kind; returns the errors (none = valid). */
export async function modelErrors(o: K8sObject): Promise<string[]> {
  let mod: Record<string, any>;
  try {
    mod = await import(modelModule(o));
  } catch {
    return [`${o.kind} ${o.metadata.name}: no kubernetes-models type for ${o.apiVersion} ${o.kind}`];
  }
  try {
    new mod[o.kind](o).validate();
    return [];
  } catch (e) {
    return [`${o.kind} ${o.metadata.name}: ${(e as Error).message}`];
  }
}

/**
 * Fields the Kubernetes API does not know (and values of the wrong type), found by compiling each
 * object as an object literal of its kubernetes-models interface: TypeScript rejects properties an
 * interface does not declare. Returns one message per diagnostic, naming the object.
 */
export function unknownFieldErrors(objects: K8sObject[]): string[] {
  const file = join(ROOT, 'test', '__rendered-manifests__.mts');
  const names: string[] = [];
  const lines = objects.map((o, i) => {
    names.push(`${o.kind} ${o.metadata.name}`);
    return `import type { I${o.kind} as T${i} } from '${modelModule(o)}';\nexport const o${i}: T${i} = ${JSON.stringify(o, null, 1)};`;
  });
  const text = lines.join('\n');
  const options: ts.CompilerOptions = { strict: true, noEmit: true, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, target: ts.ScriptTarget.ES2022, skipLibCheck: true, types: [] };
  const host = ts.createCompilerHost(options);
  const { getSourceFile, fileExists, readFile } = host;
  host.getSourceFile = (f, lang, ...rest) => (f === file ? ts.createSourceFile(f, text, lang) : getSourceFile.call(host, f, lang, ...rest));
  host.fileExists = (f) => f === file || fileExists.call(host, f);
  host.readFile = (f) => (f === file ? text : readFile.call(host, f));
  const program = ts.createProgram([file], options, host);
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const message = ts.flattenDiagnosticMessageText(d.messageText, '\n');
    if (!d.file || d.start === undefined) return message;
    const at = d.file.getLineAndCharacterOfPosition(d.start);
    // which object: the last `export const oN` at or before the diagnostic
    const before = d.file.text.slice(0, d.start);
    const index = Number(/export const o(\d+)(?![\s\S]*export const o\d+)/.exec(before)?.[1] ?? -1);
    return `${names[index] ?? d.file.fileName}: line ${at.line + 1}: ${message}`;
  });
}

/** The pod specs of every workload (Deployment, StatefulSet, Job templates and bare Pods). */
export function podSpecs(objects: K8sObject[]): { owner: string; spec: any; labels: Record<string, string> }[] {
  return objects.flatMap((o) => {
    if (o.kind === 'Pod') return [{ owner: `Pod ${o.metadata.name}`, spec: o.spec, labels: o.metadata.labels ?? {} }];
    const template = o.spec?.template;
    return template?.spec ? [{ owner: `${o.kind} ${o.metadata.name}`, spec: template.spec, labels: template.metadata?.labels ?? {} }] : [];
  });
}
