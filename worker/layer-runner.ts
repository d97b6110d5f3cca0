// Runs one LayerTask on the thread pool: splits large layers into row ranges across threads,
// applies the method (spatial equalization needs a first pass for the weight's column maxima),
// enforces the per-layer quality bar (redo at the next width, or fail with fail_fast), and has a
// thread hash the data. The result is the layer's finished row, its buffers shared with the
// threads that filled them; the caller writes it (output file or shard) and then releases it.

import { open } from 'node:fs/promises';
import { NonFiniteWeightError, QualityBarError } from '../core/errors.js';
import type { LayerTask } from '../core/job/layer-task.js';
import { matrixView } from '../core/model/model-source.js';
import { decodeToF32, dtypeSize } from '../core/quant/dtype.js';
import { equalizationScales } from '../core/quant/calibration.js';
import { STATS_PER_ROW, groupsPerRow, packedBytes, type QuantBits } from '../core/quant/reference.js';
import { v2Layout, v2ParamBytes, v2RowAlign, v2SuperGroups, type V2GroupSize } from '../core/quant/reference-v2.js';
import { statsToQuality, sumRowStats, type LayerStats } from '../core/quant/layer-stats.js';
import { quantTypeForBits, type LayerRecord, type OutputMethod, type QuantType } from '../core/format/layer-schema.js';
import { layerBytesOut } from '../core/plan/layer-bytes.js';
import { CHUNK_BYTES, zeroTimings, type TensorLocation, type Timings } from '../core/model/row-reader.js';
import { SharedBufferPool } from './shared-buffer-pool.js';
import type { ThreadPool } from './thread-pool.js';

export interface LayerOutcome {
  layerIndex: number;
  name: string;
  elements: number;
  bits: number;
  plannedBits: number;
  method: OutputMethod;
  quantType: QuantType;
  bytesIn: number;
  /** format.md's bytes_out of what was produced */
  bytesOut: number;
  sqnrDb: number;
  cosine: number;
  notes: string[];
  sha256: string;
  timings: Timings;
}

export interface LayerResult {
  outcome: LayerOutcome;
  /** the layer's row of the output file */
  record: LayerRecord;
  /** give the record's buffers back for reuse; the record must not be used afterwards */
  release(): void;
}

const NEXT_BITS: Record<number, QuantBits | undefined> = { 2: 4, 4: 8 };

/** A layer's output buffers at one width; `data` is the record's data (v2: the codes, then the integer params). */
interface LayerBuffers {
  data: Uint8Array;
  packed: Uint8Array;
  scales: Uint16Array;
  zeroPoints: Uint16Array;
  rowStats: Float64Array;
  v2: { groupParams: Uint8Array; superScales: Uint16Array; superOffsets: Uint16Array } | null;
}

function addTimings(into: Timings, t: Timings): void {
  into.readMs += t.readMs;
  into.kernelMs += t.kernelMs;
  into.hashMs += t.hashMs;
  into.writeMs += t.writeMs;
}

type RecordBase = Pick<LayerRecord, 'layer_name' | 'layer_index' | 'shape' | 'source_dtype' | 'planned_bit_width'>;

export class LayerRunner {
  private readonly buffers = new SharedBufferPool();

  constructor(
    private readonly pool: ThreadPool,
    /** rows per piece are chosen so a piece reads about this many bytes */
    private readonly pieceBytes = 4 * CHUNK_BYTES,
  ) {}

  /** Row ranges [start, end), each a multiple of `align` rows (8, or v2RowAlign) but the last. */
  pieces(rows: number, rowBytes: number, align = 8): [number, number][] {
    let per = Math.max(align, Math.floor(this.pieceBytes / Math.max(1, rowBytes)));
    per -= per % align;
    const out: [number, number][] = [];
    for (let r = 0; r < rows; r += per) out.push([r, Math.min(rows, r + per)]);
    return out.length ? out : [[0, 0]];
  }

  async run(task: LayerTask): Promise<LayerResult> {
    const { rows, cols } = matrixView(task.shape);
    const loc: TensorLocation = { file: task.file, dataStart: task.data_start, dtype: task.dtype, cols };
    const timings = zeroTimings();
    const base: RecordBase = {
      layer_name: task.name,
      layer_index: task.layer_index,
      shape: task.shape,
      source_dtype: task.dtype,
      planned_bit_width: task.bits,
    };
    const outcome = (record: LayerRecord, notes: string[], bytesOut: number): LayerOutcome => ({
      layerIndex: task.layer_index, name: task.name, elements: rows * cols, plannedBits: task.bits, bytesIn: task.byte_length, timings,
      bits: record.bit_width, method: record.method, quantType: record.quant_type, bytesOut, sqnrDb: record.sqnr_db, cosine: record.cosine,
      notes, sha256: record.data_sha256,
    });

    if (task.bits === 16) {
      const r = await this.pool.run({ op: 'passthrough', loc, rows });
      addTimings(timings, r.timings);
      const record: LayerRecord = {
        ...base, quant_type: r.quantType!, bit_width: 16, method: 'none', group_size: 0, data: r.data!, scales: new Uint16Array(0),
        zero_points: new Uint16Array(0), equalization_scales: null, act_bit_width: null, time_group_params: null,
        sqnr_db: r.sqnrDb!, cosine: r.cosine!, notes: task.notes.length ? task.notes.join('; ') : null, data_sha256: r.sha256!,
      };
      return { outcome: outcome(record, task.notes, rows * cols * 2), record, release: () => undefined };
    }

    const pieces = this.pieces(rows, cols * dtypeSize(task.dtype), this.rowAlign(task, cols));
    let colScale = await this.equalization(task, loc, pieces, timings);
    try {
      const { record, notes, release } = await this.quantize(task, loc, rows, cols, pieces, colScale, timings, base);
      const extras = { equalizationScales: colScale ? cols : 0, timeGroups: task.time_group_params?.length ?? 0 };
      const bytesOut = layerBytesOut({ rows, cols }, record.bit_width, task.group_size, extras, task.double_quant === true);
      const scale = colScale;
      colScale = null; // now owned by the result
      return {
        outcome: outcome(record, notes, bytesOut),
        record,
        release: () => {
          release();
          if (scale) this.buffers.release(scale);
        },
      };
    } finally {
      if (colScale) this.buffers.release(colScale);
    }
  }

  /** Pieces of a v2 layer start a super-group at every width it may be redone at (the alignment grows with S only). */
  private rowAlign(task: LayerTask, cols: number): number {
    if (!task.double_quant) return 8;
    const g = task.group_size as V2GroupSize;
    return Math.max(...([2, 4, 8] as QuantBits[]).map((b) => v2RowAlign(cols, b, g)));
  }

  /** The output buffers of one width: v1 (codes, scales, zero points) or v2 (codes + params in one buffer, factors). */
  private outputs(task: LayerTask, rows: number, cols: number, bits: QuantBits): LayerBuffers {
    const gpr = groupsPerRow(cols, task.group_size);
    const rowStats = this.buffers.float64(rows * STATS_PER_ROW);
    const codeBytes = packedBytes(rows * cols, bits);
    if (!task.double_quant) {
      const packed = this.buffers.uint8(codeBytes);
      return { data: packed, packed, scales: this.buffers.uint16(rows * gpr), zeroPoints: this.buffers.uint16(rows * gpr), rowStats, v2: null };
    }
    const layout = v2Layout(bits, task.group_size as V2GroupSize);
    const groups = rows * gpr;
    const data = this.buffers.uint8(codeBytes + v2ParamBytes(groups, layout));
    const scales = this.buffers.uint16(v2SuperGroups(groups, layout));
    const zeroPoints = this.buffers.uint16(v2SuperGroups(groups, layout));
    return {
      data, packed: data.subarray(0, codeBytes), scales, zeroPoints, rowStats,
      v2: { groupParams: data.subarray(codeBytes), superScales: scales, superOffsets: zeroPoints },
    };
  }

  /** Spatial layers: s_j from the calibration's channel maxima and the weight's column maxima. */
  private async equalization(task: LayerTask, loc: TensorLocation, pieces: [number, number][], timings: Timings): Promise<Float32Array | null> {
    if (task.method !== 'spatial') return null;
    const maxima = await Promise.all(pieces.map(([rowStart, rowEnd]) => this.pool.run({ op: 'colabsmax', loc, rowStart, rowEnd })));
    const wmax = new Float32Array(loc.cols);
    for (const m of maxima) {
      addTimings(timings, m.timings);
      m.colAbsMax!.forEach((v, j) => {
        if (v > wmax[j]!) wmax[j] = v;
      });
    }
    const colScale = this.buffers.float32(loc.cols);
    colScale.set(equalizationScales(Float32Array.from(task.channel_absmax!), wmax, task.smooth_alpha));
    return colScale;
  }

  /**
   * The error a layer would have at each of `widths` (its method and refine as in the task),
   * without producing its row: what the measured allocation strategy decides from.
   */
  async measure(task: LayerTask, widths: readonly QuantBits[]): Promise<Map<QuantBits, LayerStats>> {
    const { rows, cols } = matrixView(task.shape);
    const loc: TensorLocation = { file: task.file, dataStart: task.data_start, dtype: task.dtype, cols };
    const timings = zeroTimings();
    const pieces = this.pieces(rows, cols * dtypeSize(task.dtype), this.rowAlign(task, cols));
    const colScale = await this.equalization(task, loc, pieces, timings);
    const out = new Map<QuantBits, LayerStats>();
    try {
      for (const bits of widths) {
        const o = this.outputs(task, rows, cols, bits);
        try {
          await this.quantizePieces(task, loc, pieces, { bits, colScale, ...o }, timings);
          out.set(bits, sumRowStats(o.rowStats, rows));
        } finally {
          this.buffers.release(o.data, o.scales, o.zeroPoints, o.rowStats);
        }
      }
    } finally {
      if (colScale) this.buffers.release(colScale);
    }
    return out;
  }

  /** Every piece of a layer through the kernel; throws NonFiniteWeightError for the first bad value. */
  private async quantizePieces(
    task: LayerTask, loc: TensorLocation, pieces: [number, number][],
    o: { bits: QuantBits; colScale: Float32Array | null } & Omit<LayerBuffers, 'data'>,
    timings: Timings,
  ): Promise<void> {
    const { bits, colScale, packed, scales, zeroPoints, rowStats, v2 } = o;
    const results = await Promise.all(
      pieces.map(([rowStart, rowEnd]) =>
        this.pool.run({
          op: 'quantize',
          args: { ...loc, rowStart, rowEnd, groupSize: task.group_size, refine: task.refine, bits, colScale, packed, scales, zeroPoints, rowStats, v2 },
        }),
      ),
    );
    for (const r of results) addTimings(timings, r.timings);
    const bad = results.map((r) => r.nonFinite!).filter((i) => i >= 0);
    if (bad.length) {
      const index = Math.min(...bad);
      throw new NonFiniteWeightError(task.name, index, await this.valueAt(loc, index));
    }
  }

  private async quantize(
    task: LayerTask, loc: TensorLocation, rows: number, cols: number, pieces: [number, number][], colScale: Float32Array | null,
    timings: Timings, base: RecordBase,
  ): Promise<{ record: LayerRecord; notes: string[]; release: () => void }> {
    const notes = [...task.notes];
    let bits = task.bits as QuantBits;
    for (;;) {
      const o = this.outputs(task, rows, cols, bits);
      const { data, scales, zeroPoints, rowStats } = o;
      const release = () => this.buffers.release(data, scales, zeroPoints);
      let kept = false;
      try {
        await this.quantizePieces(task, loc, pieces, { bits, colScale, ...o }, timings);
        const q = statsToQuality(sumRowStats(rowStats, rows));
        const bar = task.min_layer_cosine[bits];
        if (q.cosine < bar) {
          const c = q.cosine.toFixed(4);
          if (task.fail_fast) {
            throw new QualityBarError(`layer "${task.name}": cosine ${c} at ${bits} bits is below min_layer_cosine ${bar} (fail_fast)`, task.name, q.cosine);
          }
          const next = NEXT_BITS[bits];
          if (next) {
            notes.push(`cosine ${c} < ${bar} at ${bits} bits; redone at ${next} bits`);
            bits = next;
            continue;
          }
          notes.push(`cosine ${c} is below min_layer_cosine ${bar} even at ${bits} bits`);
        }
        const hashed = await this.pool.run({ op: 'hash', data });
        addTimings(timings, hashed.timings);
        const record: LayerRecord = {
          ...base,
          quant_type: quantTypeForBits(bits, task.double_quant === true),
          bit_width: bits,
          method: task.method as Exclude<OutputMethod, 'none'>,
          group_size: task.group_size,
          data,
          scales,
          zero_points: zeroPoints,
          equalization_scales: colScale,
          act_bit_width: task.act_bit_width,
          time_group_params: task.time_group_params,
          sqnr_db: q.sqnrDb,
          cosine: q.cosine,
          notes: notes.length ? notes.join('; ') : null,
          data_sha256: hashed.sha256!,
        };
        kept = true;
        return { record, notes, release };
      } finally {
        this.buffers.release(rowStats);
        if (!kept) release();
      }
    }
  }

  /** The offending value, for the error message. */
  private async valueAt(loc: TensorLocation, index: number): Promise<number> {
    const size = dtypeSize(loc.dtype);
    const fh = await open(loc.file, 'r');
    try {
      const b = Buffer.alloc(size);
      await fh.read(b, 0, size, loc.dataStart + index * size);
      return decodeToF32(b, loc.dtype)[0]!;
    } finally {
      await fh.close();
    }
  }
}
