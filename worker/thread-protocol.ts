// Messages between the ThreadPool (main thread) and quant-thread.ts.

import type { SerializedError } from '../core/errors.js';
import type { QuantType } from '../core/format/layer-schema.js';
import type { QuantizePieceArgs } from './piece-ops.js';
import type { TensorLocation, Timings } from '../core/model/row-reader.js';

export type PieceRequest =
  | { id: number; op: 'colabsmax'; loc: TensorLocation; rowStart: number; rowEnd: number }
  | { id: number; op: 'quantize'; args: QuantizePieceArgs }
  | { id: number; op: 'passthrough'; loc: TensorLocation; rows: number }
  | { id: number; op: 'hash'; data: Uint8Array };

export type PieceResponse =
  | {
      id: number;
      ok: true;
      timings: Timings;
      colAbsMax?: Float32Array;
      nonFinite?: number;
      /** passthrough: the stored bytes (transferred) */
      data?: Uint8Array;
      sha256?: string;
      quantType?: QuantType;
      sqnrDb?: number;
      cosine?: number;
    }
  | { id: number; ok: false; error: SerializedError };
