// Measuring layers at (width, group size): the four error sums from the kernels' row statistics,
// through the measurement cache, on the local worker pool. A layer is read once per group size
// for all the widths it still needs there.

import type { LayerTask } from '../core/job/layer-task.js';
import type { LayerBits } from '../core/config/schema.js';
import type { QuantBits } from '../core/quant/reference.js';
import type { LayerStats } from '../core/quant/layer-stats.js';
import type { Encoding } from '../core/plan/candidates.js';
import { runInLanes } from './run/lanes.js';
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

const triple = (layer: number, bits: number, groupSize: number, encoding: Encoding) => `${layer}:${bits}:${groupSize}:${encoding}`;
/** A (group size, encoding) pair as one map key. */
const setting = (groupSize: number, encoding: Encoding) => `${encoding}/${groupSize}`;

export class LayerMeasurements {
  private readonly stats = new Map<string, LayerStats>();
  private readonly wanted = new Map<number, Map<string, { groupSize: number; encoding: Encoding; widths: Set<QuantBits> }>>();
  readonly counts: MeasurementCounts = { measured: 0, cached: 0 };

  constructor(
    /** per layer index: the task to measure it with (its method; bits and group size are replaced) */
    private readonly templates: readonly LayerTask[],
    private readonly cache: MeasurementCache,
  ) {}

  /** Ask for (layer, bits, group size, encoding); 16-bit layers need no measurement. */
  want(layer: number, bits: LayerBits, groupSize: number, encoding: Encoding = 'v1'): void {
    if (bits >= 16) return;
    let groups = this.wanted.get(layer);
    if (!groups) this.wanted.set(layer, (groups = new Map()));
    const key = setting(groupSize, encoding);
    let entry = groups.get(key);
    if (!entry) groups.set(key, (entry = { groupSize, encoding, widths: new Set() }));
    entry.widths.add(bits as QuantBits);
  }

  /** Measure everything wanted, `concurrency` layers at a time. */
  async run(measurer: LayerMeasurer, concurrency: number): Promise<void> {
    const layers = [...this.wanted.keys()].sort((a, b) => a - b);
    await runInLanes(layers.length, concurrency, (k) => this.measureLayer(measurer, layers[k]!));
  }

  private async measureLayer(measurer: LayerMeasurer, layer: number): Promise<void> {
    const template = this.templates[layer]!;
    const sha = this.cache.dir === null ? '' : await sourceSha256(template);
    const keyOf = (bits: number, groupSize: number, encoding: Encoding): MeasurementKey => ({
      source_sha256: sha, dtype: template.dtype, shape: template.shape, method: methodIdentity(template), bits, group_size: groupSize,
      encoding, refine: template.refine,
    });
    const groups = [...this.wanted.get(layer)!.values()].sort((a, b) => a.encoding.localeCompare(b.encoding) || a.groupSize - b.groupSize);
    for (const { groupSize, encoding, widths } of groups) {
      const missing: QuantBits[] = [];
      for (const bits of [...widths].sort((a, b) => a - b)) {
        const hit = this.cache.get(keyOf(bits, groupSize, encoding));
        if (hit) {
          this.stats.set(triple(layer, bits, groupSize, encoding), hit);
          this.counts.cached++;
        } else missing.push(bits);
      }
      if (missing.length === 0) continue;
      // the template is v1; a v2 measurement quantizes it with double-quantized group params
      const { double_quant: _v1, ...v1 } = template;
      const task: LayerTask = { ...v1, group_size: groupSize as LayerTask['group_size'], ...(encoding === 'v2' ? { double_quant: true as const } : {}) };
      const measured = await measurer.measure(task, missing);
      for (const bits of missing) {
        const s = measured.get(bits)!;
        this.stats.set(triple(layer, bits, groupSize, encoding), s);
        this.cache.put(keyOf(bits, groupSize, encoding), s);
        this.counts.measured++;
      }
    }
  }

  /** The sums of a measured triple. */
  get(layer: number, bits: QuantBits, groupSize: number, encoding: Encoding = 'v1'): LayerStats {
    const s = this.stats.get(triple(layer, bits, groupSize, encoding));
    if (!s) throw new Error(`layer ${layer} was not measured at ${bits} bits, group ${groupSize}, encoding ${encoding}`);
    return s;
  }
}
