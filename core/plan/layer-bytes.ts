// bytes_out of format.md: data bytes + 2 per scale + 2 per zero point + 4 per equalization scale
// + 16 per time-group entry. The number the target-size optimiser works against. A format v2
// (double_quant) layer's data also holds its integer group params, and its scales / zero points
// are the two float16 factors of each super-group (v2LayerBytes).

import { groupsPerRow, packedBytes, type QuantBits } from '../quant/reference.js';
import { v2LayerBytes, type V2GroupSize } from '../quant/reference-v2.js';

export interface LayerGeometry {
  rows: number;
  cols: number;
}

/** Extra bytes a method adds, independent of the bit width. */
export interface MethodExtras {
  equalizationScales: number;
  timeGroups: number;
}

export const NO_EXTRAS: MethodExtras = { equalizationScales: 0, timeGroups: 0 };

export function quantizedBytesOut(g: LayerGeometry, bits: number, groupSize: number, extras: MethodExtras = NO_EXTRAS, doubleQuant = false): number {
  const extra = 4 * extras.equalizationScales + 16 * extras.timeGroups;
  if (doubleQuant) return v2LayerBytes(g.rows, g.cols, bits as QuantBits, groupSize as V2GroupSize) + extra;
  const groups = g.rows * groupsPerRow(g.cols, groupSize);
  return packedBytes(g.rows * g.cols, bits) + 4 * groups + extra;
}

/** A layer kept as a float: 2 bytes per element at 16 bits, 4 at 32. */
export function floatBytesOut(g: LayerGeometry, bits: 16 | 32): number {
  return g.rows * g.cols * (bits / 8);
}

export function layerBytesOut(g: LayerGeometry, bits: number, groupSize: number, extras: MethodExtras = NO_EXTRAS, doubleQuant = false): number {
  return bits >= 16 ? floatBytesOut(g, bits as 16 | 32) : quantizedBytesOut(g, bits, groupSize, extras, doubleQuant);
}
