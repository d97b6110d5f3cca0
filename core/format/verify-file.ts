// `verify`: re-read the source and the file, dequantize every layer from its documented columns,
// recompute SQNR and cosine against the source, and check hashes, shapes, sizes and summary.

import { createHash } from 'node:crypto';
import type { QuantKernel } from '../quant/kernel.js';
import { openModel, matrixView } from '../model/model-source.js';
import { RowReader, chunkRows, zeroTimings } from '../model/row-reader.js';
import { decodeToF32 } from '../quant/dtype.js';
import { groupsPerRow, packedBytes, type QuantBits } from '../quant/reference.js';
import { V2_GROUP_SIZES, v2Layout, v2ParamBytes, v2SuperGroups, type V2GroupSize } from '../quant/reference-v2.js';
import { accumulateStats, statsToQuality, type LayerStats } from '../quant/layer-stats.js';
import { OutputFileReader } from './output-reader.js';
import { layerValues } from './layer-values.js';
import { isDoubleQuant, recordBytesOut, type LayerRecord } from './layer-schema.js';

export interface LayerCheck {
  index: number;
  name: string;
  ok: boolean;
  problems: string[];
  stored: { sqnr_db: number; cosine: number };
  recomputed: { sqnr_db: number; cosine: number };
}

export interface VerifyResult {
  ok: boolean;
  layers: LayerCheck[];
  problems: string[];
}

/** SQNR and cosine are recomputed in another order than the quantizer's, so they agree to rounding. */
const SQNR_TOLERANCE_DB = 1e-3;
const COSINE_TOLERANCE = 1e-6;

export async function verifyFile(outPath: string, modelPath: string, kernel: QuantKernel, onLayer?: (c: LayerCheck) => void): Promise<VerifyResult> {
  const model = openModel(modelPath);
  const file = await OutputFileReader.open(outPath);
  const reader = new RowReader();
  const problems: string[] = [];
  const layers: LayerCheck[] = [];
  try {
    if (file.numLayers !== model.tensors.length) {
      problems.push(`the file has ${file.numLayers} layers, the model ${model.tensors.length} tensors`);
    }
    let bytesOut = 0;
    for (let i = 0; i < Math.min(file.numLayers, model.tensors.length); i++) {
      const r = await file.layer(i);
      const t = model.tensors[i]!;
      const p: string[] = [];
      if (r.layer_name !== t.name) p.push(`name "${r.layer_name}" but the source's tensor ${i} is "${t.name}"`);
      if (r.layer_index !== i) p.push(`layer_index ${r.layer_index} at position ${i}`);
      if (r.shape.join() !== t.shape.join()) p.push(`shape [${r.shape}] but the source has [${t.shape}]`);
      if (r.source_dtype !== t.dtype) p.push(`source_dtype ${r.source_dtype} but the source is ${t.dtype}`);
      const sha = createHash('sha256').update(r.data).digest('hex');
      if (sha !== r.data_sha256) p.push(`data_sha256 ${r.data_sha256} but the data hashes to ${sha}`);
      const { rows, cols } = matrixView(t.shape);
      p.push(...layoutProblems(r, rows, cols));
      bytesOut += recordBytesOut(r);
      let recomputed = { sqnr_db: NaN, cosine: NaN };
      if (p.length === 0) {
        const s = await recomputeStats(kernel, reader, r, t.file, t.dataStart, rows, cols);
        const q = statsToQuality(s);
        recomputed = { sqnr_db: q.sqnrDb, cosine: q.cosine };
        const sqnrOk = r.sqnr_db === q.sqnrDb || Math.abs(r.sqnr_db - q.sqnrDb) <= SQNR_TOLERANCE_DB;
        if (!sqnrOk) p.push(`sqnr_db ${r.sqnr_db} but recomputed ${q.sqnrDb}`);
        if (!(Math.abs(r.cosine - q.cosine) <= COSINE_TOLERANCE)) p.push(`cosine ${r.cosine} but recomputed ${q.cosine}`);
      }
      const check = { index: i, name: r.layer_name, ok: p.length === 0, problems: p, stored: { sqnr_db: r.sqnr_db, cosine: r.cosine }, recomputed };
      layers.push(check);
      onLayer?.(check);
    }
    const summary = file.json<{ bytes_out?: number; layers?: number }>('arrowquant.summary');
    if (summary.bytes_out !== bytesOut) problems.push(`summary says bytes_out ${summary.bytes_out}, the layers add up to ${bytesOut}`);
    if (summary.layers !== file.numLayers) problems.push(`summary says ${summary.layers} layers, the file has ${file.numLayers}`);
  } finally {
    await reader.close();
    await file.close();
  }
  for (const l of layers) for (const p of l.problems) problems.push(`layer ${l.index} (${l.name}): ${p}`);
  return { ok: problems.length === 0, layers, problems };
}

/** The data, scales and zero points a layer must hold (format.md v1, or "Version 2" for int*_dq). */
function layoutProblems(r: LayerRecord, rows: number, cols: number): string[] {
  const quantized = r.method !== 'none';
  if (quantized && isDoubleQuant(r)) {
    if (!(V2_GROUP_SIZES as readonly number[]).includes(r.group_size) || ![2, 4, 8].includes(r.bit_width)) {
      return [`${r.quant_type} with bit_width ${r.bit_width} and group_size ${r.group_size}; allowed: bit_width 2, 4, 8 and group_size 16, 32`];
    }
    const layout = v2Layout(r.bit_width as QuantBits, r.group_size as V2GroupSize);
    const groups = rows * groupsPerRow(cols, r.group_size);
    const expectBytes = packedBytes(rows * cols, r.bit_width) + v2ParamBytes(groups, layout);
    const supers = v2SuperGroups(groups, layout);
    const p: string[] = [];
    if (r.data.byteLength !== expectBytes) p.push(`data holds ${r.data.byteLength} bytes, expected ${expectBytes} (codes and integer group params)`);
    if (r.scales.length !== supers || r.zero_points.length !== supers) {
      p.push(`${r.scales.length} scales and ${r.zero_points.length} zero points, expected ${supers} (one per super-group)`);
    }
    return p;
  }
  const expectBytes = quantized ? packedBytes(rows * cols, r.bit_width) : rows * cols * (r.quant_type === 'f32' ? 4 : 2);
  const expectGroups = quantized ? rows * groupsPerRow(cols, r.group_size) : 0;
  const p: string[] = [];
  if (r.data.byteLength !== expectBytes) p.push(`data holds ${r.data.byteLength} bytes, expected ${expectBytes}`);
  if (r.scales.length !== expectGroups || r.zero_points.length !== expectGroups) {
    p.push(`${r.scales.length} scales and ${r.zero_points.length} zero points, expected ${expectGroups}`);
  }
  return p;
}

async function recomputeStats(kernel: QuantKernel, reader: RowReader, r: Parameters<typeof layerValues>[1], file: string, dataStart: number, rows: number, cols: number): Promise<LayerStats> {
  const loc = { file, dataStart, dtype: r.source_dtype, cols };
  const step = chunkRows(cols, r.source_dtype);
  const w = new Float32Array(Math.min(rows, step) * cols);
  const wh = new Float32Array(w.length);
  const s = { w2: 0, e2: 0, wq: 0, q2: 0 };
  const timings = zeroTimings();
  for (let r0 = 0; r0 < rows; r0 += step) {
    const n = Math.min(step, rows - r0);
    const src = decodeToF32(await reader.read(loc, r0, n, timings), r.source_dtype, w);
    accumulateStats(s, src, layerValues(kernel, r, r0, n, wh));
  }
  return s;
}
