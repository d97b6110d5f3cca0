// The TypeScript reference wrapped as a kernel: what runs when the native addon is missing,
// and what every native variant is compared against.

import { decodeToF32 } from '../core/quant/dtype.js';
import { columnAbsMaxRef, dequantizeRowsRef, quantizeRowsRef } from '../core/quant/reference.js';
import { dequantizeRowsV2Ref, quantizeRowsV2Ref } from '../core/quant/reference-v2.js';
import type { QuantizeCall, QuantKernel } from '../core/quant/kernel.js';

export const referenceKernel: QuantKernel = {
  variant: 'reference',
  quantizeSync(call, out) {
    const values = decodeToF32(call.src, call.dtype);
    return quantizeRowsRef({ ...call, values }, out);
  },
  async quantize(call: QuantizeCall, out) {
    return this.quantizeSync(call, out);
  },
  dequantize(args, out) {
    dequantizeRowsRef(args, out);
  },
  quantizeV2Sync(call, out) {
    const values = decodeToF32(call.src, call.dtype);
    return quantizeRowsV2Ref({ ...call, values }, out);
  },
  async quantizeV2(call, out) {
    return this.quantizeV2Sync(call, out);
  },
  dequantizeV2(args, out) {
    dequantizeRowsV2Ref(args, out);
  },
  columnAbsMax(src, dtype, rows, cols, out) {
    columnAbsMaxRef(decodeToF32(src, dtype), rows, cols, out);
  },
};
