import { SAMPLE_LLAMA, syntheticLlamaTensors, type LlamaShape } from '../../core/model/synthetic-llama.js';
import { writeSafetensors, writeShardedSafetensors } from '../../core/model/safetensors-writer.js';
import { UsageError } from '../../core/errors.js';
import type { SourceDtype } from '../../core/quant/dtype.js';
import { COMMON_OPTIONS, parseCommandArgs } from '../options.js';
import type { CommandIO } from './io.js';

const USAGE = 'arrowquant sample-model <out.safetensors | out-dir> [--dtype bf16|f16|f32] [--layers N] [--hidden N] [--intermediate N] [--vocab N] [--shards N] [--seed N]';

export async function sampleModelCommand(argv: string[], io: CommandIO): Promise<number> {
  const { values, positionals } = parseCommandArgs(
    argv,
    {
      ...COMMON_OPTIONS,
      dtype: { type: 'string', default: 'bf16' },
      layers: { type: 'string' },
      hidden: { type: 'string' },
      intermediate: { type: 'string' },
      vocab: { type: 'string' },
      shards: { type: 'string', default: '1' },
      seed: { type: 'string', default: '1' },
    },
    { min: 1, max: 1, usage: USAGE },
  );
  if (values.help) {
    io.out(`${USAGE}\n\nWrites a small Llama-shaped safetensors model (Hugging Face names, heavy-tailed values).\nDefault: ${JSON.stringify(SAMPLE_LLAMA)}; --shards N > 1 writes a directory with model.safetensors.index.json.\n`);
    return 0;
  }
  const int = (name: string, v: string | undefined, dflt: number, min: number) => {
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name}: expected an integer ≥ ${min}, got ${JSON.stringify(v)}`);
    return n;
  };
  const dtype = values.dtype.toUpperCase();
  if (!['BF16', 'F16', 'F32'].includes(dtype)) throw new UsageError(`--dtype: expected bf16, f16 or f32, got ${JSON.stringify(values.dtype)}`);
  const shape: LlamaShape = {
    ...SAMPLE_LLAMA,
    layers: int('layers', values.layers, SAMPLE_LLAMA.layers, 1),
    hidden: int('hidden', values.hidden, SAMPLE_LLAMA.hidden, 8),
    intermediate: int('intermediate', values.intermediate, SAMPLE_LLAMA.intermediate, 1),
    vocab: int('vocab', values.vocab, SAMPLE_LLAMA.vocab, 1),
  };
  if (shape.hidden % shape.heads !== 0) throw new UsageError(`--hidden must be a multiple of ${shape.heads} (attention heads)`);
  const shards = int('shards', values.shards, 1, 1);
  const tensors = syntheticLlamaTensors(shape, dtype as SourceDtype, int('seed', values.seed, 1, 0));
  const metadata = { format: 'pt', source: 'arrowquant sample-model' };
  if (shards > 1) await writeShardedSafetensors(positionals[0]!, tensors, shards, metadata);
  else await writeSafetensors(positionals[0]!, tensors, metadata);
  io.err(`wrote ${positionals[0]} (${tensors.length} tensors, ${dtype}${shards > 1 ? `, ${shards} shards` : ''})\n`);
  return 0;
}
