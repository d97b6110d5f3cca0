// ŵ of a layer row range from its record: dequantized codes (format.md) or the stored floats.

import type { QuantKernel } from '../quant/kernel.js';
import { decodeToF32 } from '../quant/dtype.js';
import { groupsPerRow, packedBytes, type QuantBits } from '../quant/reference.js';
import type { V2GroupSize } from '../quant/reference-v2.js';
import { matrixView } from '../model/model-source.js';
import { isDoubleQuant, type LayerRecord } from './layer-schema.js';

const STORED_DTYPE = { f16: 'F16', bf16: 'BF16', f32: 'F32' } as const;

/** Rows [rowStart, rowStart + rows) of ŵ into `out`. For quantized layers rowStart must be a multiple of 8. */
export function layerValues(kernel: QuantKernel, r: LayerRecord, rowStart: number, rows: number, out: Float32Array): Float32Array {
  const { cols } = matrixView(r.shape);
  const dst = out.subarray(0, rows * cols);
  if (r.method === 'none') {
    const dtype = STORED_DTYPE[r.quant_type as keyof typeof STORED_DTYPE];
    const size = dtype === 'F32' ? 4 : 2;
    return decodeToF32(r.data.subarray(rowStart * cols * size, (rowStart + rows) * cols * size), dtype, dst);
  }
  const bits = r.bit_width as QuantBits;
  const gpr = groupsPerRow(cols, r.group_size);
  const byte0 = (rowStart * cols * bits) / 8;
  if (isDoubleQuant(r)) {
    // data = the layer's codes, then its integer group params (format.md "Version 2")
    const { rows: allRows } = matrixView(r.shape);
    const codeBytes = packedBytes(allRows * cols, bits);
    kernel.dequantizeV2(
      {
        packed: r.data.subarray(byte0, byte0 + Math.ceil((rows * cols * bits) / 8)),
        groupParams: r.data.subarray(codeBytes),
        superScales: r.scales,
        superOffsets: r.zero_points,
        firstGroup: rowStart * gpr,
        rows, cols, bits, groupSize: r.group_size as V2GroupSize, colScale: r.equalization_scales,
      },
      dst,
    );
    return dst;
  }
  kernel.dequantize(
    {
      packed: r.data.subarray(byte0, byte0 + Math.ceil((rows * cols * bits) / 8)),
      scales: r.scales.subarray(rowStart * gpr, (rowStart + rows) * gpr),
      zeroPoints: r.zero_points.subarray(rowStart * gpr, (rowStart + rows) * gpr),
      rows, cols, bits, groupSize: r.group_size, colScale: r.equalization_scales,
    },
    dst,
  );
  return dst;
}
