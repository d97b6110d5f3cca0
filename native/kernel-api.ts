// The contract between the quantization pipeline and a kernel implementation: the TypeScript
// reference (core/quant/reference.ts) or one of the compiled native variants. Every
// implementation gives bit-identical codes, scales, zero points and row statistics.

import type { SourceDtype } from '../core/quant/dtype.js';
import type { DequantizeRowsArgs, QuantBits, QuantizeRowsOutput } from '../core/quant/reference.js';

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

export interface QuantKernel {
  readonly variant: KernelVariant;
  /** Off the calling thread where the implementation can. Resolves to −1, or the index of the first non-finite element (nothing else is meaningful then). */
  quantize(call: QuantizeCall, out: QuantizeRowsOutput): Promise<number>;
  quantizeSync(call: QuantizeCall, out: QuantizeRowsOutput): number;
  /** ŵ of a row range whose codes start at a byte boundary. */
  dequantize(args: DequantizeRowsArgs, out: Float32Array): void;
  /** out[j] = max(out[j], |w_ij|) over rows × cols elements of `src` (spatial equalization). */
  columnAbsMax(src: Uint8Array, dtype: SourceDtype, rows: number, cols: number, out: Float32Array): void;
}
