// A layer as the coordinator records it once done, from whichever side reports it: the local
// threads' outcome, or the row of an uploaded (or resumed) shard — the coordinator trusts the
// shard, not the worker.

import { recordBytesOut, type LayerRecord } from '../../core/format/layer-schema.js';
import { matrixView } from '../../core/model/model-source.js';
import type { LayerOutcome } from '../../worker/layer-runner.js';
import type { FinishedLayer, PreparedJob } from '../job.js';

export function finishedFromOutcome(o: LayerOutcome): FinishedLayer {
  return { layerIndex: o.layerIndex, name: o.name, notes: o.notes, elements: o.elements, bits: o.bits, plannedBits: o.plannedBits, bytesIn: o.bytesIn, bytesOut: o.bytesOut, sqnrDb: o.sqnrDb, cosine: o.cosine };
}

/** What a staged shard says about its layer; bytes in are the plan's for that layer. */
export function finishedFromRecord(job: PreparedJob, r: LayerRecord): FinishedLayer {
  const { rows, cols } = matrixView(r.shape);
  const t = job.tasks[r.layer_index]!;
  return {
    layerIndex: r.layer_index,
    name: r.layer_name,
    notes: r.notes ? [r.notes] : [],
    elements: rows * cols,
    bits: r.bit_width,
    plannedBits: r.planned_bit_width,
    bytesIn: t.byte_length,
    bytesOut: recordBytesOut(r),
    sqnrDb: r.sqnr_db,
    cosine: r.cosine,
  };
}
