import { renameSync, rmSync, writeFileSync } from 'node:fs';
import { OutputError } from '../../core/errors.js';
import { readReportData } from '../report/report-data.js';
import { renderReportHtml } from '../report/report-html.js';
import type { CommandIO } from './io.js';

export async function reportCommand([input]: string[], values: { output?: string; json?: boolean }, io: CommandIO): Promise<number> {
  const data = await readReportData(input!);
  const output = values.output ?? input!.replace(/(\.arrow)?$/, '.report.html');
  const tmp = `${output}.${process.pid}.tmp`;
  try {
    writeFileSync(tmp, renderReportHtml(data));
    renameSync(tmp, output);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw new OutputError(`cannot write ${output}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, output);
  }
  io.err(`wrote ${output}\n`);
  if (values.json) io.out(JSON.stringify(data, null, 2) + '\n');
  return 0;
}
