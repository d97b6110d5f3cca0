// Runs one LayerTask on the thread pool: splits large layers into row ranges across threads,
// applies the method (spatial equalization needs a first pass for the weight's column maxima),
// enforces the per-layer quality bar (redo at the next width, or fail with fail_fast), and has
// a thread hash, encode and write the layer's shard.

import { NonFiniteWeightError, QualityBarError } from '../core/errors.js';
import type { LayerTask } from '../core/job/layer-task.js';
import { matrixView } from '../core/model/model-source.js';
import { decodeToF32, dtypeSize } from '../core/quant/dtype.js';
import { equalizationScales } from '../core/quant/calibration.js';
import { STATS_PER_ROW, groupsPerRow, packedBytes, type QuantBits } from '../core/quant/reference.js';
import { statsToQuality, sumRowStats } from '../core/quant/layer-stats.js';
import { quantTypeForBits, type LayerRecord, type OutputMethod, type QuantType } from '../core/format/layer-schema.js';
import { layerBytesOut } from '../core/plan/layer-bytes.js';
import { CHUNK_BYTES, zeroTimings, type TensorLocation, type Timings } from '../core/model/row-reader.js';
import { SharedBufferPool } from './shared-buffer-pool.js';
import type { ThreadPool } from './thread-pool.js';
import { open } from 'node:fs/promises';

export interface LayerOutcome {
  layerIndex: number;
  name: string;
  elements: number;
  bits: number;
  plannedBits: number;
  method: OutputMethod;
  quantType: QuantType;
  bytesIn: number;
  /** format.md's bytes_out of what was written */
  bytesOut: number;
  sqnrDb: number;
  cosine: number;
  notes: string[];
  shardBytes: number;
  sha256: string;
  timings: Timings;
}

const NEXT_BITS: Record<number, QuantBits | undefined> = { 2: 4, 4: 8 };

function addTimings(into: Timings, t: Timings): void {
  into.readMs += t.readMs;
  into.kernelMs += t.kernelMs;
  into.hashMs += t.hashMs;
  into.writeMs += t.writeMs;
}

export class LayerRunner {
  private readonly buffers = new SharedBufferPool();

  constructor(
    private readonly pool: ThreadPool,
    /** rows per piece are chosen so a piece reads about this many bytes */
    private readonly pieceBytes = 4 * CHUNK_BYTES,
  ) {}

  /** Row ranges [start, end), each a multiple of 8 rows but the last. */
  pieces(rows: number, rowBytes: number): [number, number][] {
    let per = Math.max(8, Math.floor(this.pieceBytes / Math.max(1, rowBytes)));
    per -= per % 8;
    const out: [number, number][] = [];
    for (let r = 0; r < rows; r += per) out.push([r, Math.min(rows, r + per)]);
    return out.length ? out : [[0, 0]];
  }

  async run(task: LayerTask, shardPath: string): Promise<LayerOutcome> {
    const { rows, cols } = matrixView(task.shape);
    const loc: TensorLocation = { file: task.file, dataStart: task.data_start, dtype: task.dtype, cols };
    const timings = zeroTimings();
    const base = {
      layer_name: task.name,
      layer_index: task.layer_index,
      shape: task.shape,
      source_dtype: task.dtype,
      planned_bit_width: task.bits,
    };
    const outcome = (o: Omit<LayerOutcome, 'layerIndex' | 'name' | 'elements' | 'plannedBits' | 'bytesIn' | 'timings'>): LayerOutcome => ({
      layerIndex: task.layer_index, name: task.name, elements: rows * cols, plannedBits: task.bits, bytesIn: task.byte_length, timings, ...o,
    });

    if (task.bits === 16) {
      const r = await this.pool.run({
        op: 'passthrough', loc, rows, shardPath,
        record: {
          ...base, bit_width: 16, method: 'none', group_size: 0, scales: new Uint16Array(0), zero_points: new Uint16Array(0),
          equalization_scales: null, act_bit_width: null, time_group_params: null, notes: task.notes.length ? task.notes.join('; ') : null,
        },
      });
      addTimings(timings, r.timings);
      return outcome({
        bits: 16, method: 'none', quantType: r.quantType!, bytesOut: rows * cols * 2, sqnrDb: r.sqnrDb!, cosine: r.cosine!,
        notes: task.notes, shardBytes: r.shard!.bytes, sha256: r.shard!.sha256,
      });
    }

    const pieces = this.pieces(rows, cols * dtypeSize(task.dtype));
    let colScale: Float32Array | null = null;
    if (task.method === 'spatial') {
      const maxima = await Promise.all(pieces.map(([rowStart, rowEnd]) => this.pool.run({ op: 'colabsmax', loc, rowStart, rowEnd })));
      const wmax = new Float32Array(cols);
      for (const m of maxima) {
        addTimings(timings, m.timings);
        m.colAbsMax!.forEach((v, j) => {
          if (v > wmax[j]!) wmax[j] = v;
        });
      }
      colScale = this.buffers.float32(cols);
      colScale.set(equalizationScales(Float32Array.from(task.channel_absmax!), wmax, task.smooth_alpha));
    }

    try {
      return await this.quantize(task, shardPath, loc, rows, cols, pieces, colScale, timings, base, outcome);
    } finally {
      if (colScale) this.buffers.release(colScale);
    }
  }

  private async quantize(
    task: LayerTask, shardPath: string, loc: TensorLocation, rows: number, cols: number, pieces: [number, number][], colScale: Float32Array | null,
    timings: Timings, base: Pick<LayerRecord, 'layer_name' | 'layer_index' | 'shape' | 'source_dtype' | 'planned_bit_width'>,
    outcome: (o: Omit<LayerOutcome, 'layerIndex' | 'name' | 'elements' | 'plannedBits' | 'bytesIn' | 'timings'>) => LayerOutcome,
  ): Promise<LayerOutcome> {
    const notes = [...task.notes];
    let bits = task.bits as QuantBits;
    const gpr = groupsPerRow(cols, task.group_size);
    for (;;) {
      const packed = this.buffers.uint8(packedBytes(rows * cols, bits));
      const scales = this.buffers.uint16(rows * gpr);
      const zeroPoints = this.buffers.uint16(rows * gpr);
      const rowStats = this.buffers.float64(rows * STATS_PER_ROW);
      try {
        const results = await Promise.all(
          pieces.map(([rowStart, rowEnd]) =>
            this.pool.run({
              op: 'quantize',
              args: { ...loc, rowStart, rowEnd, bits, groupSize: task.group_size, refine: task.refine, colScale, packed, scales, zeroPoints, rowStats },
            }),
          ),
        );
        for (const r of results) addTimings(timings, r.timings);
        const bad = results.map((r) => r.nonFinite!).filter((i) => i >= 0);
        if (bad.length) {
          const index = Math.min(...bad);
          throw new NonFiniteWeightError(task.name, index, await this.valueAt(loc, index));
        }
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
        const method = task.method as Exclude<OutputMethod, 'none'>;
        const record: Omit<LayerRecord, 'data_sha256'> = {
          ...base,
          quant_type: quantTypeForBits(bits),
          bit_width: bits,
          method,
          group_size: task.group_size,
          data: packed,
          scales,
          zero_points: zeroPoints,
          equalization_scales: colScale,
          act_bit_width: task.act_bit_width,
          time_group_params: task.time_group_params,
          sqnr_db: q.sqnrDb,
          cosine: q.cosine,
          notes: notes.length ? notes.join('; ') : null,
        };
        const w = await this.pool.run({ op: 'shard', record, shardPath });
        addTimings(timings, w.timings);
        const extras = { equalizationScales: colScale ? cols : 0, timeGroups: task.time_group_params?.length ?? 0 };
        return outcome({
          bits, method, quantType: record.quant_type, bytesOut: layerBytesOut({ rows, cols }, bits, task.group_size, extras),
          sqnrDb: q.sqnrDb, cosine: q.cosine, notes, shardBytes: w.shard!.bytes, sha256: w.shard!.sha256,
        });
      } finally {
        this.buffers.release(packed, scales, zeroPoints, rowStats);
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
