import { dequantizeFile, type OutputDtype } from '../../core/format/dequantize-file.js';
import { assertOutputIsNotFile } from '../../core/model/output-guard.js';
import { selectKernel } from '../../native/kernels.js';
import type { CommandIO } from './io.js';

export interface DequantizeValues {
  output: string;
  dtype?: OutputDtype;
  json?: boolean;
}

export async function dequantizeCommand([file]: string[], values: DequantizeValues, io: CommandIO): Promise<number> {
  assertOutputIsNotFile(file!, values.output);
  const { kernel } = selectKernel(io.env);
  const r = await dequantizeFile(file!, values.output, kernel, values.dtype ?? null);
  io.err(`wrote ${values.output} (${r.tensors} tensors)\n`);
  if (values.json) io.out(JSON.stringify({ output: values.output, tensors: r.tensors }) + '\n');
  return 0;
}
