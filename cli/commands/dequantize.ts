import { UsageError } from '../../core/errors.js';
import { dequantizeFile, type OutputDtype } from '../../core/format/dequantize-file.js';
import { selectKernel } from '../../native/kernels.js';
import { COMMON_OPTIONS, parseCommandArgs } from '../options.js';
import type { CommandIO } from './io.js';

const USAGE = 'arrowquant dequantize out.arrow -o model.safetensors [--dtype f32|f16|bf16]';

export async function dequantizeCommand(argv: string[], io: CommandIO): Promise<number> {
  const { values, positionals } = parseCommandArgs(
    argv,
    { ...COMMON_OPTIONS, output: { type: 'string', short: 'o' }, dtype: { type: 'string' } },
    { min: 1, max: 1, usage: USAGE },
  );
  if (values.help) {
    io.out(`${USAGE}\n\nWrites safetensors with the same tensor names, shapes and order, holding ŵ (format.md).\nDefault dtype: each tensor's source dtype.\n`);
    return 0;
  }
  if (!values.output) throw new UsageError(`missing -o/--output FILE\nusage: ${USAGE}`);
  const { kernel } = selectKernel(io.env);
  const r = await dequantizeFile(positionals[0]!, values.output, kernel, (values.dtype as OutputDtype | undefined) ?? null);
  io.err(`wrote ${values.output} (${r.tensors} tensors)\n`);
  if (values.json) io.out(JSON.stringify({ output: values.output, tensors: r.tensors }) + '\n');
  return 0;
}
