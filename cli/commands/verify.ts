import { VerificationError } from '../../core/errors.js';
import { verifyFile } from '../../core/format/verify-file.js';
import { selectKernel } from '../../native/kernels.js';
import { printable } from '../printable.js';
import type { CommandIO } from './io.js';

export interface VerifyValues {
  against: string;
  json?: boolean;
}

export async function verifyCommand([file]: string[], values: VerifyValues, io: CommandIO): Promise<number> {
  const { kernel, warning } = selectKernel(io.env);
  if (warning) io.err(`warning: ${warning}\n`);
  const result = await verifyFile(file!, values.against, kernel);
  const bad = result.layers.filter((l) => !l.ok).length;
  io.err(`${result.layers.length} layers checked, ${bad} with problems\n`);
  for (const p of result.problems) io.err(`  ${printable(p)}\n`);
  if (values.json) io.out(JSON.stringify(result, null, 2) + '\n');
  if (!result.ok) throw new VerificationError(`${file} does not match ${values.against}: ${result.problems.length} problem(s)`, result.problems);
  io.err(`ok: ${file} matches ${values.against}\n`);
  return 0;
}
