// Messages between the ThreadPool (main thread) and quant-thread.ts.

import type { SerializedError } from '../core/errors.js';
import type { LayerRecord, QuantType } from '../core/format/layer-schema.js';
import type { QuantizePieceArgs } from './piece-ops.js';
import type { TensorLocation, Timings } from '../core/model/row-reader.js';

export type PieceRequest =
  | { id: number; op: 'colabsmax'; loc: TensorLocation; rowStart: number; rowEnd: number }
  | { id: number; op: 'quantize'; args: QuantizePieceArgs }
  | {
      id: number;
      op: 'passthrough';
      loc: TensorLocation;
      rows: number;
      /** every column but data, quant_type and the quality columns */
      record: Omit<LayerRecord, 'data' | 'quant_type' | 'sqnr_db' | 'cosine' | 'data_sha256'>;
      shardPath: string;
    }
  | { id: number; op: 'shard'; record: Omit<LayerRecord, 'data_sha256'>; shardPath: string };

export type PieceResponse =
  | {
      id: number;
      ok: true;
      timings: Timings;
      colAbsMax?: Float32Array;
      nonFinite?: number;
      shard?: { bytes: number; sha256: string };
      quantType?: QuantType;
      sqnrDb?: number;
      cosine?: number;
    }
  | { id: number; ok: false; error: SerializedError };
