// Small safetensors models for tests, written from float32 values.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeFromF32 } from '../../core/quant/dtype.js';
import { writeSafetensors } from '../../core/model/safetensors-writer.js';
import type { SourceDtype } from '../../core/quant/dtype.js';

export interface TestTensor {
  name: string;
  shape: number[];
  values: Float32Array;
  dtype?: SourceDtype;
}

export async function writeModel(path: string, tensors: TestTensor[], dtype: SourceDtype = 'BF16'): Promise<string> {
  await writeSafetensors(
    path,
    tensors.map((t) => ({ name: t.name, shape: t.shape, dtype: t.dtype ?? dtype, data: encodeFromF32(t.values, t.dtype ?? dtype) })),
  );
  return path;
}

export function tempDir(prefix: string): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * A synthetic BF16 Llama big enough that, with the TypeScript reference kernel and the clipping
 * search, a layer takes a while (kills land in the middle of work), and its local run's bytes.
 */
export async function writeSlowModel(dir: string, modelsDir: string, layers: number): Promise<{ model: string; local: Buffer }> {
  const { syntheticLlamaTensors } = await import('../../core/model/synthetic-llama.js');
  const { runLocalJob } = await import('../../coordinator/local-run.js');
  const { resolveConfig } = await import('../../core/config/load.js');
  const { readFileSync } = await import('node:fs');
  const model = join(modelsDir, 'slow.safetensors');
  await writeSafetensors(model, syntheticLlamaTensors({ hidden: 256, intermediate: 688, layers, vocab: 512, heads: 8, kvHeads: 8 }, 'BF16', 11));
  const out = join(dir, 'slow-local.arrow');
  await runLocalJob(model, { output: out, config: resolveConfig({ refine: 'search' }) });
  return { model, local: readFileSync(out) };
}
