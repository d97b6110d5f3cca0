// Measuring layers at (width, group size): the four error sums from the kernels' row statistics,
// through the measurement cache, on the local worker pool. A layer is read once per group size
// for all the widths it still needs there.

import type { LayerTask } from '../core/job/layer-task.js';
import type { LayerBits } from '../core/config/schema.js';
import type { QuantBits } from '../core/quant/reference.js';
import type { LayerStats } from '../core/quant/layer-stats.js';
import type { Encoding } from '../core/plan/candidates.js';
import { MeasurementCache, methodIdentity, sourceSha256, type MeasurementKey } from './measurement-cache.js';

/** What measures a layer: LayerRunner.measure (local threads), or anything with its contract. */
export interface LayerMeasurer {
  measure(task: LayerTask, widths: readonly QuantBits[]): Promise<Map<QuantBits, LayerStats>>;
}

export interface MeasurementCounts {
  /** (layer, width, group size) triples quantized in this run */
  measured: number;
  /** triples answered by the cache */
  cached: number;
}

const triple = (layer: number, bits: number, groupSize: number) => `${layer}:${bits}:${groupSize}`;

export class LayerMeasurements {
  private readonly stats = new Map<string, LayerStats>();
  private readonly wanted = new Map<number, Map<number, Set<QuantBits>>>();
  readonly counts: MeasurementCounts = { measured: 0, cached: 0 };

  constructor(
    /** per layer index: the task to measure it with (its method; bits and group size are replaced) */
    private readonly templates: readonly LayerTask[],
    private readonly cache: MeasurementCache,
    private readonly encoding: Encoding = 'v1',
  ) {}

  /** Ask for (layer, bits, group size); 16-bit layers need no measurement. */
  want(layer: number, bits: LayerBits, groupSize: number): void {
    if (bits >= 16) return;
    let groups = this.wanted.get(layer);
    if (!groups) this.wanted.set(layer, (groups = new Map()));
    let widths = groups.get(groupSize);
    if (!widths) groups.set(groupSize, (widths = new Set()));
    widths.add(bits as QuantBits);
  }

  /** Measure everything wanted, `concurrency` layers at a time. */
  async run(measurer: LayerMeasurer, concurrency: number): Promise<void> {
    const layers = [...this.wanted.keys()].sort((a, b) => a - b);
    let next = 0;
    const lane = async () => {
      while (next < layers.length) await this.measureLayer(measurer, layers[next++]!);
    };
    await Promise.all(Array.from({ length: Math.max(1, concurrency) }, lane));
  }

  private async measureLayer(measurer: LayerMeasurer, layer: number): Promise<void> {
    const template = this.templates[layer]!;
    const sha = this.cache.dir === null ? '' : await sourceSha256(template);
    const keyOf = (bits: number, groupSize: number): MeasurementKey => ({
      source_sha256: sha, dtype: template.dtype, shape: template.shape, method: methodIdentity(template), bits, group_size: groupSize,
      encoding: this.encoding, refine: template.refine,
    });
    const groups = [...this.wanted.get(layer)!].sort((a, b) => a[0] - b[0]);
    for (const [groupSize, widthSet] of groups) {
      const missing: QuantBits[] = [];
      for (const bits of [...widthSet].sort((a, b) => a - b)) {
        const hit = this.cache.get(keyOf(bits, groupSize));
        if (hit) {
          this.stats.set(triple(layer, bits, groupSize), hit);
          this.counts.cached++;
        } else missing.push(bits);
      }
      if (missing.length === 0) continue;
      const task = { ...template, group_size: groupSize as LayerTask['group_size'] };
      const measured = await measurer.measure(task, missing);
      for (const bits of missing) {
        const s = measured.get(bits)!;
        this.stats.set(triple(layer, bits, groupSize), s);
        this.cache.put(keyOf(bits, groupSize), s);
        this.counts.measured++;
      }
    }
  }

  /** The sums of a measured triple. */
  get(layer: number, bits: QuantBits, groupSize: number): LayerStats {
    const s = this.stats.get(triple(layer, bits, groupSize));
    if (!s) throw new Error(`layer ${layer} was not measured at ${bits} bits, group ${groupSize}`);
    return s;
  }
}
