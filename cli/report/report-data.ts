// What the report shows, read from an output file alone: the summary, each layer as written and,
// for a measured allocation, the optimiser's arrowquant.allocation (curve and comparisons).

import { recordBytesOut } from '../../core/format/layer-schema.js';
import { OutputFileReader } from '../../core/format/output-reader.js';
import { FormatError } from '../../core/errors.js';
import { allocationSummarySchema, type AllocationSummary } from '../../core/plan/allocation-summary.js';
import type { FileSummary } from '../../coordinator/file-metadata.js';

export interface ReportLayer {
  index: number;
  name: string;
  shape: number[];
  params: number;
  bits: number;
  planned_bits: number;
  method: string;
  group_size: number;
  bytes_out: number;
  /** null when exact (+Inf dB) */
  sqnr_db: number | null;
  cosine: number;
  /** ‖W−Ŵ‖²/‖W‖² from the stored SQNR (float32, so to about 7 digits) */
  relative_error: number;
}

export interface ReportData {
  file: string;
  model: string;
  format_version: string | null;
  summary: FileSummary;
  /** Σ params × relative_error over the layers */
  total_error: number;
  allocation: AllocationSummary | null;
  layers: ReportLayer[];
}

export async function readReportData(path: string): Promise<ReportData> {
  const file = await OutputFileReader.open(path);
  try {
    const layers: ReportLayer[] = [];
    for await (const r of file.layers()) {
      const params = r.shape.reduce((a, b) => a * b, 1);
      const exact = !Number.isFinite(r.sqnr_db);
      layers.push({
        index: r.layer_index, name: r.layer_name, shape: r.shape, params, bits: r.bit_width, planned_bits: r.planned_bit_width, method: r.method,
        group_size: r.group_size, bytes_out: recordBytesOut(r), sqnr_db: exact ? null : r.sqnr_db, cosine: r.cosine, relative_error: exact ? 0 : 10 ** (-r.sqnr_db / 10),
      });
    }
    let allocation: AllocationSummary | null = null;
    if (file.metadata.has('arrowquant.allocation')) {
      const parsed = allocationSummarySchema.safeParse(file.json('arrowquant.allocation'));
      if (!parsed.success) throw new FormatError(`${path}: schema metadata "arrowquant.allocation" is malformed: ${parsed.error.issues[0]?.message}`, path);
      allocation = parsed.data;
    }
    return {
      file: path,
      model: file.json<{ model: string }>('arrowquant.source').model,
      format_version: file.metadata.get('arrowquant.format_version') ?? null,
      summary: file.json<FileSummary>('arrowquant.summary'),
      total_error: layers.reduce((s, l) => s + l.params * l.relative_error, 0),
      allocation,
      layers,
    };
  } finally {
    await file.close();
  }
}
