// Shards and the output file at the IPC framing level.
//
// A shard is one layer as an Arrow IPC stream: [schema message][record batch message][EOS],
// what a worker produces and uploads. The output file is assembled from the shards' record
// batch messages copied verbatim, in canonical order, after the file's own schema message
// (with the schema metadata, known only once every layer is done), without decoding and
// re-encoding the layers. The file is exactly: "ARROW1\0\0", the Arrow IPC stream of the
// batches (schema message, batch messages, end-of-stream), the footer, its length, "ARROW1".
// (apache-arrow's own file writer leaves out the leading schema message; the specification
// has it, and every reader accepts both.)

import { open, rename, rm } from 'node:fs/promises';
import { MetadataVersion, Table, tableFromIPC, tableToIPC, type Schema } from 'apache-arrow';
import { FileBlock, Footer } from 'apache-arrow/ipc/metadata/file';
import { FormatError, OutputError } from '../errors.js';
import { COLUMN_NAMES, batchToRecord, layerBatch, layerSchema, type LayerRecord } from './layer-schema.js';

const MAGIC = Buffer.from('ARROW1\0\0', 'latin1');
const EOS = Buffer.from([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
const CONTINUATION = 0xffffffff;

export function encodeShard(record: LayerRecord): Uint8Array {
  return tableToIPC(new Table([layerBatch(record)]), 'stream');
}

export interface DecodedShard {
  record: LayerRecord;
  /** the record batch message: continuation, length, flatbuffer, body */
  batchMessage: Uint8Array;
  metaDataLength: number;
  bodyLength: number;
}

/** Parse and check a shard: framing, exact columns, one row. Throws FormatError. */
export function decodeShard(bytes: Uint8Array, what = 'shard'): DecodedShard {
  const fail = (msg: string): never => {
    throw new FormatError(`${what}: ${msg}`, what);
  };
  if (bytes.byteLength < 24) fail(`too short (${bytes.byteLength} bytes) for an Arrow IPC stream`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const messageAt = (off: number) => {
    if (off + 8 > bytes.byteLength || dv.getUint32(off, true) !== CONTINUATION) fail(`no IPC message at byte ${off}`);
    const len = dv.getInt32(off + 4, true);
    if (len < 0 || len % 8 !== 0 || off + 8 + len > bytes.byteLength) fail(`bad message length ${len} at byte ${off}`);
    return len;
  };
  const schemaLen = messageAt(0);
  const batchStart = 8 + schemaLen;
  const batchMetaLen = messageAt(batchStart);
  const end = bytes.byteLength - EOS.length;
  if (!Buffer.from(bytes.buffer, bytes.byteOffset + end, EOS.length).equals(EOS)) fail('does not end with the end-of-stream marker');
  const bodyLength = end - batchStart - 8 - batchMetaLen;
  if (bodyLength < 0) fail('record batch body is truncated');
  let table: Table;
  try {
    table = tableFromIPC(bytes);
  } catch (e) {
    return fail(`not a readable Arrow IPC stream (${(e as Error).message})`);
  }
  const names = table.schema.fields.map((f) => f.name);
  if (names.join() !== COLUMN_NAMES.join()) fail(`columns are [${names.join(', ')}], expected [${COLUMN_NAMES.join(', ')}]`);
  const expected = layerSchema();
  table.schema.fields.forEach((f, i) => {
    if (String(f.type) !== String(expected.fields[i]!.type)) fail(`column ${f.name} has type ${f.type}, expected ${expected.fields[i]!.type}`);
  });
  if (table.batches.length !== 1 || table.numRows !== 1) fail(`holds ${table.numRows} rows in ${table.batches.length} batches, expected one layer`);
  return {
    record: batchToRecord(table.batches[0]!),
    batchMessage: bytes.subarray(batchStart, end),
    metaDataLength: 8 + batchMetaLen,
    bodyLength,
  };
}

/** The schema message (continuation, length, flatbuffer) of `schema`, metadata included. */
function schemaMessage(schema: Schema): Uint8Array {
  const stream = tableToIPC(new Table(schema), 'stream');
  return stream.subarray(0, stream.byteLength - EOS.length);
}

/**
 * Writes the output file: appears at `path` only when complete (temporary name + rename);
 * on any failure nothing is left behind.
 */
export class ArrowFileAssembler {
  private fh: Awaited<ReturnType<typeof open>> | null = null;
  private offset = 0;
  private readonly blocks: FileBlock[] = [];
  private readonly tmp: string;

  private constructor(
    readonly path: string,
    private readonly schema: Schema,
  ) {
    this.tmp = `${path}.tmp-${process.pid}`;
  }

  static async create(path: string, metadata: Map<string, string>): Promise<ArrowFileAssembler> {
    const a = new ArrowFileAssembler(path, layerSchema(metadata));
    try {
      a.fh = await open(a.tmp, 'w');
      await a.write(MAGIC);
      await a.write(schemaMessage(a.schema));
    } catch (e) {
      await a.abort();
      throw outputError(path, e);
    }
    return a;
  }

  /** Append one layer's record batch message (from decodeShard), in canonical order. */
  async append(shard: Pick<DecodedShard, 'batchMessage' | 'metaDataLength' | 'bodyLength'>): Promise<void> {
    try {
      this.blocks.push(new FileBlock(shard.metaDataLength, shard.bodyLength, this.offset));
      await this.write(shard.batchMessage);
    } catch (e) {
      await this.abort();
      throw outputError(this.path, e);
    }
  }

  async finish(): Promise<void> {
    try {
      await this.write(EOS);
      const footer = Footer.encode(new Footer(this.schema, MetadataVersion.V5, this.blocks, []));
      await this.write(footer);
      await this.write(Buffer.from(Int32Array.of(footer.byteLength).buffer));
      await this.write(MAGIC.subarray(0, 6));
      await this.fh!.sync();
      await this.fh!.close();
      this.fh = null;
      await rename(this.tmp, this.path);
    } catch (e) {
      await this.abort();
      throw outputError(this.path, e);
    }
  }

  async abort(): Promise<void> {
    if (this.fh) await this.fh.close().catch(() => undefined);
    this.fh = null;
    await rm(this.tmp, { force: true });
  }

  private async write(bytes: Uint8Array): Promise<void> {
    let done = 0;
    while (done < bytes.byteLength) {
      const { bytesWritten } = await this.fh!.write(bytes, done, bytes.byteLength - done, this.offset + done);
      done += bytesWritten;
    }
    this.offset += bytes.byteLength;
  }
}

function outputError(path: string, e: unknown): OutputError {
  if (e instanceof OutputError) return e;
  const code = (e as NodeJS.ErrnoException).code;
  const why = code === 'ENOSPC' ? 'the disk is full' : code === 'EACCES' || code === 'EPERM' ? 'permission denied' : code === 'ENOENT' ? 'the directory does not exist' : (code ?? (e as Error).message);
  return new OutputError(`cannot write ${path}: ${why}`, path, { cause: e });
}
