import { renameSync, rmSync, writeFileSync } from 'node:fs';
import { OutputError } from '../../core/errors.js';
import { COMMON_OPTIONS, parseCommandArgs } from '../options.js';
import { readReportData } from '../report/report-data.js';
import { renderReportHtml } from '../report/report-html.js';
import type { CommandIO } from './io.js';

const USAGE = 'arrowquant report out.arrow [-o report.html] [--json]';

const HELP = `${USAGE}

One self-contained HTML page (inline CSS and SVG, nothing fetched) about an output file: the
summary, the allocation beside the heuristic and uniform INT4 (files written with
--strategy measured), the size–error curve, bits and SQNR per layer along depth, and the
per-layer table. Default output: out.arrow with ".report.html" in place of ".arrow".
  -o, --output FILE          the HTML file to write
  --json                     print the report's data as JSON on stdout`;

export async function reportCommand(argv: string[], io: CommandIO): Promise<number> {
  const { values, positionals } = parseCommandArgs(argv, { ...COMMON_OPTIONS, output: { type: 'string', short: 'o' } }, { min: 1, max: 1, usage: USAGE });
  if (values.help) {
    io.out(HELP + '\n');
    return 0;
  }
  const input = positionals[0]!;
  const data = await readReportData(input);
  const output = values.output ?? input.replace(/(\.arrow)?$/, '.report.html');
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
