// Reading an ArrowQuant output file back: schema metadata, and one layer at a time (random
// access through the footer, so memory holds one layer, never the file).

import { open, type FileHandle } from 'node:fs/promises';
import { RecordBatchReader, type AsyncRecordBatchFileReader } from 'apache-arrow';
import { FormatError } from '../errors.js';
import { COLUMN_NAMES, batchToRecord, layerSchema, type LayerRecord } from './layer-schema.js';

export class OutputFileReader {
  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    private readonly reader: AsyncRecordBatchFileReader,
    readonly metadata: Map<string, string>,
  ) {}

  static async open(path: string): Promise<OutputFileReader> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      throw new FormatError(`cannot open ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, path);
    }
    try {
      const head = Buffer.alloc(6);
      await fh.read(head, 0, 6, 0);
      if (head.toString('latin1') !== 'ARROW1') throw new FormatError(`${path} is not an Arrow IPC file (no ARROW1 magic)`, path);
      let reader: AsyncRecordBatchFileReader;
      try {
        reader = (await RecordBatchReader.from(fh)) as unknown as AsyncRecordBatchFileReader;
        await reader.open();
      } catch (e) {
        throw new FormatError(`${path}: unreadable Arrow file (${(e as Error).message})`, path);
      }
      const names = reader.schema.fields.map((f) => f.name);
      if (names.join() !== COLUMN_NAMES.join()) {
        throw new FormatError(`${path} is not an ArrowQuant file: columns [${names.join(', ')}]`, path);
      }
      const expected = layerSchema();
      reader.schema.fields.forEach((f, i) => {
        if (String(f.type) !== String(expected.fields[i]!.type)) throw new FormatError(`${path}: column ${f.name} has type ${f.type}, expected ${expected.fields[i]!.type}`, path);
      });
      return new OutputFileReader(path, fh, reader, reader.schema.metadata);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  get numLayers(): number {
    return this.reader.numRecordBatches;
  }

  json<T = unknown>(key: string): T {
    const v = this.metadata.get(key);
    if (v === undefined) throw new FormatError(`${this.path}: schema metadata has no "${key}"`, this.path);
    try {
      return JSON.parse(v) as T;
    } catch {
      throw new FormatError(`${this.path}: schema metadata "${key}" is not valid JSON`, this.path);
    }
  }

  async layer(i: number): Promise<LayerRecord> {
    const batch = await this.reader.readRecordBatch(i);
    if (!batch || batch.numRows !== 1) throw new FormatError(`${this.path}: record batch ${i} does not hold exactly one layer`, this.path);
    return batchToRecord(batch);
  }

  async *layers(): AsyncGenerator<LayerRecord> {
    for (let i = 0; i < this.numLayers; i++) yield await this.layer(i);
  }

  async close(): Promise<void> {
    await this.reader.cancel().catch(() => undefined);
    await this.fh.close().catch(() => undefined);
  }
}
