import { VerificationError } from '../../core/errors.js';
import { verifyFile } from '../../core/format/verify-file.js';
import { selectKernel } from '../../native/kernels.js';
import { COMMON_OPTIONS, parseCommandArgs } from '../options.js';
import type { CommandIO } from './io.js';

const USAGE = 'arrowquant verify out.arrow --against <model> [--json]';

export async function verifyCommand(argv: string[], io: CommandIO): Promise<number> {
  const { values, positionals } = parseCommandArgs(argv, { ...COMMON_OPTIONS, against: { type: 'string' } }, { min: 1, max: 1, usage: USAGE });
  if (values.help) {
    io.out(`${USAGE}\n\nRe-reads the source and the file, dequantizes every layer from the file's columns, recomputes SQNR\nand cosine against the source and checks hashes, shapes, sizes and the summary. Exit 1 on any mismatch.\n`);
    return 0;
  }
  if (!values.against) throw new VerificationError(`missing --against <model>\nusage: ${USAGE}`, []);
  const { kernel, warning } = selectKernel(io.env);
  if (warning) io.err(`warning: ${warning}\n`);
  const result = await verifyFile(positionals[0]!, values.against, kernel);
  const bad = result.layers.filter((l) => !l.ok).length;
  io.err(`${result.layers.length} layers checked, ${bad} with problems\n`);
  for (const p of result.problems) io.err(`  ${p}\n`);
  if (values.json) io.out(JSON.stringify(result, null, 2) + '\n');
  if (!result.ok) throw new VerificationError(`${positionals[0]} does not match ${values.against}: ${result.problems.length} problem(s)`, result.problems);
  io.err(`ok: ${positionals[0]} matches ${values.against}\n`);
  return 0;
}
