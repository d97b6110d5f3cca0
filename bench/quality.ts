// npm run bench:quality
//
// Issue 12's comparison: weighted SQNR and bits per weight over the attention and MLP
// projections, recomputed from each written file's columns (bench/projection-quality.ts), for
// format v2 (--double-quant --refine search) and for v1 at the nearest bits per weight — on the
// real stories260K F32 fixture and on the synthetic heavy-tailed Llama (core/model/synthetic-llama.ts,
// F32, generated once into .bench/). A table goes to stderr, one JSON document to stdout.

import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../core/package-info.js';
import { resolveConfig } from '../core/config/load.js';
import type { PartialConfig } from '../core/config/schema.js';
import { runLocalJob } from '../coordinator/local-run.js';
import { writeSafetensors } from '../core/model/safetensors-writer.js';
import { SAMPLE_LLAMA, syntheticLlamaTensors } from '../core/model/synthetic-llama.js';
import { selectKernel } from '../native/kernels.js';
import { projectionQuality, type ProjectionQuality } from './projection-quality.js';

interface Config {
  name: string;
  v2: boolean;
  cfg: PartialConfig;
}

const V2: Config[] = [
  { name: 'v2 INT4 g16', v2: true, cfg: { bit_width: 4, group_size: 16, double_quant: true, refine: 'search' } },
  { name: 'v2 INT2 g16', v2: true, cfg: { bit_width: 2, group_size: 16, double_quant: true, refine: 'search' } },
  { name: 'v2 INT8 g32', v2: true, cfg: { bit_width: 8, group_size: 32, double_quant: true, refine: 'search' } },
];
const V1: Config[] = [2, 4, 8].flatMap((b) =>
  [32, 64, 128].map((g) => ({ name: `v1 INT${b} g${g} search`, v2: false, cfg: { bit_width: b as 2 | 4 | 8, group_size: g as 32 | 64 | 128, refine: 'search' as const } })));

/** Targets of issue 12 on the fixture. */
const TARGETS: Record<string, { maxBpw: number; minDb: number }> = {
  'v2 INT4 g16': { maxBpw: 4.5, minDb: 22.4 },
  'v2 INT2 g16': { maxBpw: 2.625, minDb: 10.0 },
  'v2 INT8 g32': { maxBpw: 8.5, minDb: 45.0 },
};

async function measure(model: string, outDir: string, c: Config): Promise<ProjectionQuality & { config: string }> {
  const out = join(outDir, `quality-${c.name.replace(/\s+/g, '-')}.arrow`);
  await runLocalJob(model, { output: out, config: resolveConfig(c.cfg) });
  return { config: c.name, ...(await projectionQuality(out, model, selectKernel().kernel)) };
}

async function main(): Promise<void> {
  const dir = join(packageRoot(), '.bench');
  mkdirSync(dir, { recursive: true });
  const synthetic = join(dir, 'synthetic-llama-sample-f32.safetensors');
  if (!existsSync(synthetic)) await writeSafetensors(synthetic, syntheticLlamaTensors(SAMPLE_LLAMA, 'F32', 7));
  const models = [
    { name: 'stories260K F32', path: join(packageRoot(), 'test', 'fixtures', 'stories260K', 'stories260K-f32.safetensors') },
    { name: 'synthetic heavy-tailed Llama F32', path: synthetic },
  ];
  const doc: Record<string, unknown>[] = [];
  for (const m of models) {
    const v1 = [];
    for (const c of V1) v1.push(await measure(m.path, dir, c));
    const lines: string[] = [];
    for (const c of V2) {
      const v2 = await measure(m.path, dir, c);
      const near = v1.reduce((a, b) => (Math.abs(b.bitsPerWeight - v2.bitsPerWeight) < Math.abs(a.bitsPerWeight - v2.bitsPerWeight) ? b : a));
      const t = m.name.startsWith('stories') ? TARGETS[c.name] : undefined;
      const met = t ? v2.bitsPerWeight <= t.maxBpw && v2.sqnrDb >= t.minDb : null;
      lines.push(`${c.name.padEnd(14)} ${v2.bitsPerWeight.toFixed(3).padStart(6)} bpw ${v2.sqnrDb.toFixed(2).padStart(6)} dB | nearest v1: ${near.config.padEnd(20)} ${near.bitsPerWeight.toFixed(3).padStart(6)} bpw ${near.sqnrDb.toFixed(2).padStart(6)} dB | Δ ${(v2.sqnrDb - near.sqnrDb).toFixed(2)} dB` +
        (t ? ` | target ≤ ${t.maxBpw} bpw ≥ ${t.minDb} dB: ${met ? 'met' : 'NOT met'}` : ''));
      doc.push({ model: m.name, v2, nearest_v1: near, sqnr_gain_db: v2.sqnrDb - near.sqnrDb, target: t ?? null, target_met: met });
    }
    process.stderr.write(`\n${m.name} (attention + MLP projections, from the written files):\n${lines.join('\n')}\n`);
    doc.push({ model: m.name, v1_all: v1 });
  }
  process.stdout.write(JSON.stringify({ benchmark: 'quality', results: doc }, null, 2) + '\n');
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack}\n`);
  process.exitCode = 1;
});
