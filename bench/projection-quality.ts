// Issue 12's measure, recomputed from a written file's documented columns alone: over the
// attention and MLP projections (2-D, names with self_attn or mlp), weighted SQNR
// 10·log10(Σw² / Σ(w − ŵ)²) against the source model, and bits per weight = their bytes_out · 8 /
// their parameters. Used by `npm run bench:quality` and by the v2 tests.

import type { QuantKernel } from '../core/quant/kernel.js';
import { OutputFileReader } from '../core/format/output-reader.js';
import { layerValues } from '../core/format/layer-values.js';
import { recordBytesOut } from '../core/format/layer-schema.js';
import { matrixView, openModel } from '../core/model/model-source.js';
import { RowReader, zeroTimings } from '../core/model/row-reader.js';
import { decodeToF32 } from '../core/quant/dtype.js';

export interface ProjectionQuality {
  layers: number;
  params: number;
  bytesOut: number;
  bitsPerWeight: number;
  sqnrDb: number;
}

export const PROJECTION = /(self_attn|mlp)\./;

export async function projectionQuality(outPath: string, modelPath: string, kernel: QuantKernel, isProjection = (name: string) => PROJECTION.test(name)): Promise<ProjectionQuality> {
  const model = openModel(modelPath);
  const file = await OutputFileReader.open(outPath);
  const reader = new RowReader();
  let w2 = 0;
  let e2 = 0;
  let bytesOut = 0;
  let params = 0;
  let layers = 0;
  try {
    for (let i = 0; i < file.numLayers; i++) {
      const r = await file.layer(i);
      const t = model.tensors.find((x) => x.name === r.layer_name);
      if (!t || r.shape.length !== 2 || !isProjection(r.layer_name)) continue;
      const { rows, cols } = matrixView(r.shape);
      const w = decodeToF32(await reader.read({ file: t.file, dataStart: t.dataStart, dtype: t.dtype, cols }, 0, rows, zeroTimings()), t.dtype);
      const wh = layerValues(kernel, r, 0, rows, new Float32Array(rows * cols));
      for (let k = 0; k < w.length; k++) {
        w2 += w[k]! * w[k]!;
        e2 += (w[k]! - wh[k]!) ** 2;
      }
      bytesOut += recordBytesOut(r);
      params += rows * cols;
      layers++;
    }
  } finally {
    await reader.close();
    await file.close();
  }
  return { layers, params, bytesOut, bitsPerWeight: (bytesOut * 8) / params, sqnrDb: 10 * Math.log10(w2 / e2) };
}
