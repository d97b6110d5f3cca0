// A cluster job's output while it is being written: `.<output>.<job>.partial` next to the output.
// A shard that is next in canonical order when it arrives is written there directly (its only
// write) before the job state records it; others are written there from memory or their stage
// file at their turn. So a coordinator that crashes and is started again walks the partial file
// from its first layer: each layer the job state records whose bytes are there (the recorded
// digest of the shard they make) and that the plan produces counts as written; the file is cut
// after the last one. (A layer can only be written directly once every layer before it is
// written, so nothing after that point is lost that has no stage file.)

import { closeSync, existsSync, fstatSync, openSync, readSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { KV } from 'nats';
import { layerKey } from '../../core/cluster/names.js';
import { decodeMessage, stagedLayerSchema, type StagedLayer } from '../../core/cluster/messages.js';
import { decodeShard, outputHeaderBytes, shardFramingBytes, shardOfBatchMessage } from '../../core/format/arrow-file.js';
import type { LayerRecord } from '../../core/format/layer-schema.js';
import { digestShard } from '../../core/format/shard-digest.js';
import { reservation, type PreparedJob } from '../job.js';
import { checkShardRecord } from './shard-check.js';

export const partialOutputPath = (job: PreparedJob): string => join(dirname(job.output), `.${basename(job.output)}.${job.id}.partial`);

export interface OutputBlock {
  metaDataLength: number;
  bodyLength: number;
  offset: number;
}

export interface ResumedOutput {
  /** the first layers, consecutive, found intact in the partial file */
  records: LayerRecord[];
  blocks: OutputBlock[];
  /** their recorded SHA-256 */
  hashes: string[];
}

/** The layers at the start of the job's partial file that its job state recorded there and that check out. */
export async function resumePartialOutput(job: PreparedJob, kv: KV, log: (l: string) => void): Promise<ResumedOutput> {
  const found: ResumedOutput = { records: [], blocks: [], hashes: [] };
  const path = partialOutputPath(job);
  if (!existsSync(path)) return found;
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    let offset = outputHeaderBytes(reservation(job));
    for (const task of job.tasks) {
      const entry = await kv.get(layerKey(job.id, task.layer_index));
      let rec: StagedLayer;
      try {
        if (!entry || !entry.value.length) break;
        rec = decodeMessage(stagedLayerSchema, entry.value, 'job state');
      } catch {
        break;
      }
      if (rec.output_offset !== undefined && rec.output_offset !== offset) break;
      const length = rec.size - shardFramingBytes();
      if (length <= 0 || offset + length > size) {
        log(`coordinator: layer ${task.layer_index} is recorded at byte ${offset} of ${path}, which ends before it; it will be redone`);
        break;
      }
      const batch = Buffer.allocUnsafe(length);
      if (readSync(fd, batch, 0, length, offset) !== length) break;
      const shard = shardOfBatchMessage(batch);
      const { sha256: sha, dataSha256 } = digestShard(shard);
      if (sha !== rec.sha256) {
        log(`coordinator: layer ${task.layer_index} in ${path} has digest ${sha}, not the recorded ${rec.sha256}; it and the layers after it will be redone`);
        break;
      }
      try {
        const d = decodeShard(shard, `layer ${task.layer_index} in ${path}`);
        checkShardRecord(d.record, task, dataSha256);
        found.records.push(d.record);
        found.blocks.push({ metaDataLength: d.metaDataLength, bodyLength: d.bodyLength, offset });
        found.hashes.push(rec.sha256);
      } catch (e) {
        log(`coordinator: layer ${task.layer_index} in ${path} is not usable (${(e as Error).message}); it will be redone`);
        break;
      }
      offset += length;
    }
  } finally {
    closeSync(fd);
  }
  return found;
}
