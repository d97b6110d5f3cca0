// bytes_out of format.md: data bytes + 2 per scale + 2 per zero point + 4 per equalization scale
// + 16 per time-group entry. The number the target-size optimiser works against.

import { groupsPerRow, packedBytes } from '../quant/reference.js';

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

export function quantizedBytesOut(g: LayerGeometry, bits: number, groupSize: number, extras: MethodExtras = NO_EXTRAS): number {
  const groups = g.rows * groupsPerRow(g.cols, groupSize);
  return packedBytes(g.rows * g.cols, bits) + 4 * groups + 4 * extras.equalizationScales + 16 * extras.timeGroups;
}

/** A layer kept as a float: 2 bytes per element at 16 bits, 4 at 32. */
export function floatBytesOut(g: LayerGeometry, bits: 16 | 32): number {
  return g.rows * g.cols * (bits / 8);
}

export function layerBytesOut(g: LayerGeometry, bits: number, groupSize: number, extras: MethodExtras = NO_EXTRAS): number {
  return bits >= 16 ? floatBytesOut(g, bits as 16 | 32) : quantizedBytesOut(g, bits, groupSize, extras);
}
