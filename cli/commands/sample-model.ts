import { SAMPLE_LLAMA, syntheticLlamaTensors, type LlamaShape } from '../../core/model/synthetic-llama.js';
import { writeSafetensors, writeShardedSafetensors } from '../../core/model/safetensors-writer.js';
import { UsageError } from '../../core/errors.js';
import type { SourceDtype } from '../../core/quant/dtype.js';
import type { CommandIO } from './io.js';

export interface SampleModelValues {
  dtype: 'bf16' | 'f16' | 'f32';
  layers: number;
  hidden: number;
  intermediate: number;
  vocab: number;
  shards: number;
  seed: number;
}

export async function sampleModelCommand([out]: string[], values: SampleModelValues, io: CommandIO): Promise<number> {
  const dtype = values.dtype.toUpperCase() as SourceDtype;
  const shape: LlamaShape = { ...SAMPLE_LLAMA, layers: values.layers, hidden: values.hidden, intermediate: values.intermediate, vocab: values.vocab };
  if (shape.hidden % shape.heads !== 0) throw new UsageError(`--hidden must be a multiple of ${shape.heads} (attention heads)`);
  const shards = values.shards;
  const tensors = syntheticLlamaTensors(shape, dtype, values.seed);
  const metadata = { format: 'pt', source: 'arrowquant sample-model' };
  if (shards > 1) await writeShardedSafetensors(out!, tensors, shards, metadata);
  else await writeSafetensors(out!, tensors, metadata);
  io.err(`wrote ${out} (${tensors.length} tensors, ${dtype}${shards > 1 ? `, ${shards} shards` : ''})\n`);
  return 0;
}
