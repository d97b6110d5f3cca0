import { OutputFileReader } from '../../core/format/output-reader.js';
import { recordBytesOut } from '../../core/format/layer-schema.js';
import { formatTable } from '../table.js';
import { printable } from '../printable.js';
import type { CommandIO } from './io.js';

export async function inspectCommand([path]: string[], values: { json?: boolean }, io: CommandIO): Promise<number> {
  const file = await OutputFileReader.open(path!);
  try {
    const layers = [];
    for await (const r of file.layers()) {
      layers.push({
        name: r.layer_name, shape: r.shape, quant_type: r.quant_type, bits: r.bit_width, planned_bits: r.planned_bit_width, method: r.method,
        group_size: r.group_size,
        bytes: recordBytesOut(r),
        sqnr_db: r.sqnr_db, cosine: r.cosine, notes: r.notes,
      });
    }
    const summary = file.json('arrowquant.summary');
    const source = file.json('arrowquant.source');
    const rows = layers.map((l) => [
      printable(l.name), l.quant_type, l.bits === l.planned_bits ? l.bits : `${l.planned_bits}→${l.bits}`, l.method, l.group_size || '-', l.bytes,
      Number.isFinite(l.sqnr_db) ? l.sqnr_db.toFixed(2) : String(l.sqnr_db), l.cosine.toFixed(5), printable(l.notes ?? ''),
    ]);
    io.err(formatTable(['name', 'type', 'bits', 'method', 'group', 'bytes', 'SQNR dB', 'cosine', 'notes'], rows, new Set([2, 4, 5, 6, 7])) + '\n\n');
    io.err(`source ${printable(JSON.stringify(source))}\nsummary ${printable(JSON.stringify(summary))}\n`);
    if (values.json) io.out(JSON.stringify({ file: path, format_version: file.metadata.get('arrowquant.format_version'), source, summary, layers }, null, 2) + '\n');
    return 0;
  } finally {
    await file.close();
  }
}
