// The contract between the quantization pipeline and a kernel implementation: the TypeScript
// reference (reference.ts, reference-v2.ts) or one of the compiled native variants (native/).
// Every implementation gives bit-identical codes, parameters and row statistics. Defined in
// core/ so that core/ never imports from native/.

import type { SourceDtype } from './dtype.js';
import type { DequantizeRowsArgs, QuantBits, QuantizeRowsOutput } from './reference.js';
import type { DequantizeRowsV2Args, QuantizeRowsV2Output, V2GroupSize } from './reference-v2.js';

export type KernelVariant = 'reference' | 'scalar' | 'avx2' | 'avx512' | 'neon';

export interface QuantizeCall {
  /** raw little-endian bytes of rows × cols elements of `dtype` */
  src: Uint8Array;
  dtype: SourceDtype;
  rows: number;
  cols: number;
  bits: QuantBits;
  groupSize: number;
  refine: boolean;
  /** spatial equalization scales s_j (length cols), or null */
  colScale: Float32Array | null;
}

/** A format v2 call: its first group starts a super-group (the search is part of the encoding). */
export interface QuantizeV2Call {
  src: Uint8Array;
  dtype: SourceDtype;
  rows: number;
  cols: number;
  bits: QuantBits;
  groupSize: V2GroupSize;
  colScale: Float32Array | null;
}

export interface QuantKernel {
  readonly variant: KernelVariant;
  /** Off the calling thread where the implementation can. Resolves to −1, or the index of the first non-finite element (nothing else is meaningful then). */
  quantize(call: QuantizeCall, out: QuantizeRowsOutput): Promise<number>;
  quantizeSync(call: QuantizeCall, out: QuantizeRowsOutput): number;
  /** ŵ of a row range whose codes start at a byte boundary. */
  dequantize(args: DequantizeRowsArgs, out: Float32Array): void;
  /** Format v2: −1, or the index of the first non-finite element. */
  quantizeV2Sync(call: QuantizeV2Call, out: QuantizeRowsV2Output): number;
  quantizeV2(call: QuantizeV2Call, out: QuantizeRowsV2Output): Promise<number>;
  /** Format v2: ŵ of a row range whose codes start at a byte boundary. */
  dequantizeV2(args: DequantizeRowsV2Args, out: Float32Array): void;
  /** out[j] = max(out[j], |w_ij|) over rows × cols elements of `src` (spatial equalization). */
  columnAbsMax(src: Uint8Array, dtype: SourceDtype, rows: number, cols: number, out: Float32Array): void;
}
