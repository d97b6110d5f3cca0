// `dequantize`: an ArrowQuant file back to safetensors (same names, shapes and order), for
// evaluating the quantized model in other tools. One layer in memory at a time.

import type { QuantKernel } from '../../native/kernel-api.js';
import { UsageError } from '../errors.js';
import { matrixView } from '../model/model-source.js';
import { chunkRows } from '../model/row-reader.js';
import { writeSafetensors, type TensorToWrite } from '../model/safetensors-writer.js';
import { encodeFromF32, type SourceDtype } from '../quant/dtype.js';
import { OutputFileReader } from './output-reader.js';
import { layerValues } from './layer-values.js';
import type { LayerRecord } from './layer-schema.js';

export type OutputDtype = 'f32' | 'f16' | 'bf16';

const DTYPE: Record<OutputDtype, SourceDtype> = { f32: 'F32', f16: 'F16', bf16: 'BF16' };

export async function dequantizeFile(inPath: string, outPath: string, kernel: QuantKernel, dtype: OutputDtype | null): Promise<{ tensors: number }> {
  if (dtype !== null && !(dtype in DTYPE)) throw new UsageError(`--dtype: expected f32, f16 or bf16, got ${JSON.stringify(dtype)}`);
  const file = await OutputFileReader.open(inPath);
  try {
    // Pass 1: names, shapes and dtypes for the header. Pass 2 streams the values.
    const heads: { name: string; shape: number[]; dtype: SourceDtype }[] = [];
    for (let i = 0; i < file.numLayers; i++) {
      const r = await file.layer(i);
      heads.push({ name: r.layer_name, shape: r.shape, dtype: dtype ? DTYPE[dtype] : r.source_dtype });
    }
    const tensors: TensorToWrite[] = heads.map((h, i) => ({ ...h, data: () => layerBytes(kernel, file, i, h.dtype) }));
    await writeSafetensors(outPath, tensors, { format: 'pt', source: 'arrowquant dequantize' });
    return { tensors: tensors.length };
  } finally {
    await file.close();
  }
}

async function* layerBytes(kernel: QuantKernel, file: OutputFileReader, i: number, dtype: SourceDtype): AsyncGenerator<Uint8Array> {
  const r: LayerRecord = await file.layer(i);
  const stored = r.quant_type.toUpperCase();
  if (r.method === 'none' && stored === dtype) {
    yield r.data;
    return;
  }
  const { rows, cols } = matrixView(r.shape);
  const step = chunkRows(cols, 'F32');
  const buf = new Float32Array(Math.min(step, rows) * cols);
  for (let r0 = 0; r0 < rows; r0 += step) {
    const n = Math.min(step, rows - r0);
    yield encodeFromF32(layerValues(kernel, r, r0, n, buf), dtype);
  }
}
