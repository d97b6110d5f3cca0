// The seed's configuration API in TypeScript: the effective settings as public fields, plus
// setLayerBitWidth / getLayerBitWidth / analyzeAndAssignBitWidths and YAML load/save.

import { readFileSync, writeFileSync } from 'node:fs';
import { ConfigError } from '../errors.js';
import { allocateBitWidths, type AllocationResult } from '../plan/bit-allocation.js';
import { LayerPatternMap } from '../plan/layer-patterns.js';
import { configToYaml, parseConfigYaml, parsePartialConfig, resolveConfig } from './load.js';
import { LAYER_BITS, type ArrowQuantConfig, type LayerBits, type PartialConfig } from './schema.js';

export interface DiffusionQuantConfig extends ArrowQuantConfig {}

export class DiffusionQuantConfig {
  /** Defaults, then the profile of `init.deployment_profile`, then `init` (validated). */
  constructor(init: PartialConfig = {}) {
    Object.assign(this, resolveConfig(parsePartialConfig(init, 'DiffusionQuantConfig')));
  }

  static fromYaml(text: string, source = 'YAML'): DiffusionQuantConfig {
    return new DiffusionQuantConfig(parseConfigYaml(text, source));
  }

  static load(path: string): DiffusionQuantConfig {
    return DiffusionQuantConfig.fromYaml(readFileSync(path, 'utf8'), path);
  }

  /** The settings as a plain object, validated (fields may have been assigned directly). */
  toJSON(): ArrowQuantConfig {
    const plain = Object.fromEntries(Object.entries(this)) as unknown as ArrowQuantConfig;
    return resolveConfig(parsePartialConfig(plain, 'DiffusionQuantConfig'));
  }

  toYaml(): string {
    return configToYaml(this.toJSON());
  }

  save(path: string): void {
    writeFileSync(path, this.toYaml());
  }

  setLayerBitWidth(name: string, bits: LayerBits): void {
    if (!(LAYER_BITS as readonly number[]).includes(bits)) {
      throw new ConfigError(`layer_bit_widths[${JSON.stringify(name)}]: ${bits} is not allowed; allowed: ${LAYER_BITS.join(', ')}`, `layer_bit_widths.${name}`, 'setLayerBitWidth');
    }
    this.layer_bit_widths = { ...this.layer_bit_widths, [name]: bits };
  }

  /** The layer's width when mixed precision is on and one is set (exact, then pattern), else bit_width. */
  getLayerBitWidth(name: string): LayerBits {
    if (!this.enable_mixed_precision) return this.bit_width;
    return new LayerPatternMap(this.layer_bit_widths).lookup(name)?.value ?? this.bit_width;
  }

  /**
   * The seed's heuristic over `layerNames` (see bit-allocation.ts); `layerSizes` gives each layer's
   * element count, or its shape. Manual entries are kept; the others are written into
   * layer_bit_widths. A no-op with mixed precision off. Throws InfeasibleTargetError.
   */
  analyzeAndAssignBitWidths(
    layerNames: readonly string[],
    layerSizes: ReadonlyMap<string, number | readonly number[]> | Readonly<Record<string, number | readonly number[]>>,
  ): AllocationResult | null {
    if (!this.enable_mixed_precision) return null;
    const sizeOf = (n: string) => (layerSizes instanceof Map ? layerSizes.get(n) : (layerSizes as Record<string, number | number[]>)[n]) ?? 0;
    const layers = layerNames.map((name) => {
      const s = sizeOf(name);
      if (typeof s === 'number') return { name, rows: 1, cols: s };
      const [rows = 1, ...rest] = s.length ? s : [1];
      return { name, rows: s.length > 1 ? rows : 1, cols: s.length > 1 ? rest.reduce((a: number, b: number) => a * b, 1) : rows };
    });
    const result = allocateBitWidths(layers, this.toJSON());
    const widths = { ...this.layer_bit_widths };
    result.allocations.forEach((a, i) => {
      if (!a.manual) widths[layerNames[i]!] = a.bits;
    });
    this.layer_bit_widths = widths;
    return result;
  }
}
