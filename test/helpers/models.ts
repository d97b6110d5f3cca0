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
