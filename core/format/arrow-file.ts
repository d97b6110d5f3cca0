// Shards and the output file at the IPC framing level.
//
// A shard is one layer as an Arrow IPC stream: [schema message][record batch message][EOS] —
// what a cluster worker produces and uploads. The output file is exactly: "ARROW1\0\0", an Arrow
// IPC stream (the schema message with the file's metadata, one record batch message per layer in
// canonical order, end-of-stream), the footer, its length, "ARROW1". (apache-arrow's own file
// writer leaves out the leading schema message; the specification has it and readers accept
// both.)
//
// The schema metadata (its summary) is known only when every layer is done, but layers are
// written as soon as they are next in canonical order. So the schema message gets a reserved
// region: its flatbuffer followed by zero padding, which IPC allows (the length prefix counts the
// padding). The region's size is computed from the plan alone — the summary with every number at
// its widest — so the file stays a function of the job, never of timing.

import { open, rename, rm } from 'node:fs/promises';
import { MetadataVersion, RecordBatchStreamWriter, Table, tableFromIPC, tableToIPC, type Schema } from 'apache-arrow';
import { FileBlock, Footer } from 'apache-arrow/ipc/metadata/file';
import { ConfigError, FormatError, OutputError, outputErrorFrom } from '../errors.js';
import { COLUMN_NAMES, batchToRecord, layerBatch, layerSchema, type LayerRecord } from './layer-schema.js';
import { OutputFile } from './output-file.js';

const MAGIC = Buffer.from('ARROW1\0\0', 'latin1');
const EOS = Buffer.from([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
const CONTINUATION = 0xffffffff;

/** A record batch message as consecutive byte views (the body views point at the layer's own buffers). */
export interface BatchMessage {
  chunks: Uint8Array[];
  metaDataLength: number;
  bodyLength: number;
}

let shardSchemaBytes: Uint8Array | null = null;

/** The schema message of a shard (no metadata): the same for every layer. */
function shardSchemaMessage(): Uint8Array {
  return (shardSchemaBytes ??= schemaMessage(layerSchema()));
}

/** The schema message (continuation, length, flatbuffer) of `schema`, metadata included. */
function schemaMessage(schema: Schema): Uint8Array {
  const stream = tableToIPC(new Table(schema), 'stream');
  return stream.subarray(0, stream.byteLength - EOS.length);
}

/** One layer's record batch message, encoded by apache-arrow without copying the layer's data. */
export async function encodeBatchMessage(record: LayerRecord): Promise<BatchMessage> {
  const writer = RecordBatchStreamWriter.writeAll([layerBatch(record)]);
  const all: Uint8Array[] = [];
  for await (const c of writer) all.push(c);
  let skip = shardSchemaMessage().byteLength;
  const chunks: Uint8Array[] = [];
  for (const c of all) {
    if (skip > 0) {
      skip -= c.byteLength;
      continue;
    }
    chunks.push(c);
  }
  const last = chunks.pop()!;
  if (skip !== 0 || last.byteLength !== EOS.length) throw new FormatError('unexpected IPC framing from the Arrow writer', 'encoder');
  const first = chunks.slice(0, 2);
  const metaLen = new DataView(first[1]!.buffer, first[1]!.byteOffset, 4).getInt32(0, true);
  const total = chunks.reduce((s, c) => s + c.byteLength, 0);
  return { chunks, metaDataLength: 8 + metaLen, bodyLength: total - 8 - metaLen };
}

/** The shard whose record batch message is `batch` (as the output file holds it). */
export function shardOfBatchMessage(batch: Uint8Array): Uint8Array {
  return Buffer.concat([shardSchemaMessage(), batch, EOS]);
}

/** Bytes a shard has beyond its record batch message (its schema message and end-of-stream). */
export function shardFramingBytes(): number {
  return shardSchemaMessage().byteLength + EOS.length;
}

/** Bytes before the first record batch message of an output file with `reservedSchemaBytes`. */
export function outputHeaderBytes(reservedSchemaBytes: number): number {
  return MAGIC.byteLength + reservedSchemaBytes;
}

/** A whole shard in memory (tests, small tools). */
export function encodeShard(record: LayerRecord): Uint8Array {
  return tableToIPC(new Table([layerBatch(record)]), 'stream');
}

/** A layer's whole shard as consecutive byte views (the data is not copied). */
export async function encodeShardChunks(record: LayerRecord): Promise<Uint8Array[]> {
  return [shardSchemaMessage(), ...(await encodeBatchMessage(record)).chunks, EOS];
}

export interface DecodedShard {
  record: LayerRecord;
  /** the record batch message: continuation, length, flatbuffer, body */
  batchMessage: Uint8Array;
  metaDataLength: number;
  bodyLength: number;
}

/** Where the record batch message sits in a shard (framing only, no decoding). */
export interface ShardFrame {
  offset: number;
  length: number;
  metaDataLength: number;
  bodyLength: number;
}

/** Check a shard's IPC framing from its first bytes (at least 16 + the schema message) and its size. */
export function frameShard(head: Uint8Array, size: number, what = 'shard'): ShardFrame {
  const fail = (msg: string): never => {
    throw new FormatError(`${what}: ${msg}`, what);
  };
  if (size < 24) fail(`too short (${size} bytes) for an Arrow IPC stream`);
  const dv = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const messageLen = (off: number) => {
    if (off + 8 > head.byteLength) fail(`truncated before the message at byte ${off}`);
    if (dv.getUint32(off, true) !== CONTINUATION) fail(`no IPC message at byte ${off}`);
    const len = dv.getInt32(off + 4, true);
    if (len < 0 || len % 8 !== 0 || off + 8 + len > size) fail(`bad message length ${len} at byte ${off}`);
    return len;
  };
  const offset = 8 + messageLen(0);
  const meta = messageLen(offset);
  const length = size - EOS.length - offset;
  const bodyLength = length - 8 - meta;
  if (bodyLength < 0) fail('record batch body is truncated');
  return { offset, length, metaDataLength: 8 + meta, bodyLength };
}

/** Parse and check a shard: framing, exact columns, one row. Throws FormatError. */
export function decodeShard(bytes: Uint8Array, what = 'shard'): DecodedShard {
  const frame = frameShard(bytes, bytes.byteLength, what);
  const fail = (msg: string): never => {
    throw new FormatError(`${what}: ${msg}`, what);
  };
  if (!Buffer.from(bytes.buffer, bytes.byteOffset + bytes.byteLength - EOS.length, EOS.length).equals(EOS)) fail('does not end with the end-of-stream marker');
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
    batchMessage: bytes.subarray(frame.offset, frame.offset + frame.length),
    metaDataLength: frame.metaDataLength,
    bodyLength: frame.bodyLength,
  };
}

/** Bytes to reserve for the schema message whose metadata will be at most as long as `widest`'s. */
export function schemaReservation(widest: Map<string, string>): number {
  return schemaMessage(layerSchema(widest)).byteLength;
}

const COPY_BUFFER_BYTES = 4 << 20;
const FLUSH_BEHIND_BYTES = 128 << 20;

/** Bytes written between background datasyncs (ARROW_QUANT_FLUSH_BEHIND_BYTES, at least 64 KiB). */
export function flushBehindBytes(env: NodeJS.ProcessEnv = process.env): number {
  const v = Number(env.ARROW_QUANT_FLUSH_BEHIND_BYTES);
  return Number.isInteger(v) && v >= 64 << 10 ? v : FLUSH_BEHIND_BYTES;
}

/**
 * Writes the output file, layer by layer in canonical order; it appears at `path` only when
 * complete (temporary name + rename); on any failure nothing is left behind.
 */
export class ArrowFileAssembler {
  private file: OutputFile | null = null;
  private offset: number;
  private readonly blocks: FileBlock[] = [];
  private readonly tmp: string;
  private copyBuffer: Buffer | null = null;

  private constructor(
    readonly path: string,
    private readonly reserved: number,
    tmp?: string,
  ) {
    this.tmp = tmp ?? `${path}.tmp-${process.pid}`;
    this.offset = MAGIC.byteLength + reserved;
  }

  /**
   * `reservedSchemaBytes` from schemaReservation(); the schema message is written by finish().
   * `tmp`: the file written until finish() renames it (default `<path>.tmp-<pid>`).
   */
  static async create(path: string, reservedSchemaBytes: number, tmp?: string): Promise<ArrowFileAssembler> {
    const a = new ArrowFileAssembler(path, reservedSchemaBytes, tmp);
    try {
      a.file = await OutputFile.create(a.tmp);
      await a.file.write(MAGIC, 0);
    } catch (e) {
      await a.abort();
      throw e instanceof ConfigError ? e : outputErrorFrom(path, e);
    }
    return a;
  }

  /**
   * Continue a partial file `tmp` whose first layers (`blocks`, consecutive from the start) were
   * checked by the caller; anything after them is cut off.
   */
  static async reopen(path: string, reservedSchemaBytes: number, tmp: string, blocks: readonly { metaDataLength: number; bodyLength: number; offset: number }[]): Promise<ArrowFileAssembler> {
    const a = new ArrowFileAssembler(path, reservedSchemaBytes, tmp);
    try {
      a.file = await OutputFile.existing(tmp);
      for (const b of blocks) {
        if (b.offset !== a.offset) throw new OutputError(`partial file ${tmp}: layer ${a.blocks.length} starts at ${b.offset}, expected ${a.offset}`, path);
        a.blocks.push(new FileBlock(b.metaDataLength, b.bodyLength, b.offset));
        a.offset += b.metaDataLength + b.bodyLength;
      }
      await a.file.truncate(a.offset);
    } catch (e) {
      await a.abort();
      throw e instanceof OutputError || e instanceof ConfigError ? e : outputErrorFrom(path, e);
    }
    return a;
  }

  /** Where the next layer's record batch message starts. */
  get nextOffset(): number {
    return this.offset;
  }

  /** Close the file and leave it where it is (a cluster job that stops keeps its partial file to resume). */
  async detach(): Promise<void> {
    await this.syncing?.catch(() => undefined);
    if (this.file) await this.file.close().catch(() => this.file?.discard());
    this.file = null;
  }

  /** Whether the file is written past the page cache (output-file.ts). */
  get direct(): boolean {
    return this.file?.direct ?? false;
  }

  async append(msg: BatchMessage): Promise<void> {
    await this.guard(async () => {
      this.blocks.push(new FileBlock(msg.metaDataLength, msg.bodyLength, this.offset));
      const at = this.offset;
      this.offset += msg.chunks.reduce((n, c) => n + c.byteLength, 0);
      await this.file!.writev(msg.chunks, at);
      this.flushBehind();
    });
  }

  /**
   * Write part of the next layer's record batch message before appending it: `bytes` at `at` bytes
   * into the message (a shard written as it arrives). Nothing counts until commitAhead(); an
   * abandoned message is overwritten by the next one, and finish() cuts what lies past the end.
   */
  async writeAhead(pieces: readonly Uint8Array[], at: number): Promise<void> {
    await this.guard(async () => {
      await this.file!.writev(pieces, this.offset + at);
    });
  }

  /**
   * The next layer's message, `metaDataLength + bodyLength` bytes, has been written by
   * writeAhead(): once it is in the file (what a crash of this process keeps), it counts.
   */
  async commitAhead(metaDataLength: number, bodyLength: number): Promise<void> {
    await this.guard(async () => {
      await this.file!.flush();
      this.blocks.push(new FileBlock(metaDataLength, bodyLength, this.offset));
      this.offset += metaDataLength + bodyLength;
      this.flushBehind();
    });
  }

  private syncing: Promise<void> | null = null;
  private syncedUpTo = 0;
  /** A background datasync's failure: the data may not be on disk, so the next append or finish fails with it. */
  private syncError: OutputError | null = null;
  private readonly flushEvery = flushBehindBytes();

  /**
   * Start writing dirty pages to disk in the background every so often, so that the final
   * fsync does not wait for the whole file at once.
   */
  private flushBehind(): void {
    if (this.syncing || this.offset - this.syncedUpTo < this.flushEvery) return;
    const upTo = this.offset;
    this.syncing = this.file!.datasync().then(
      () => {
        this.syncedUpTo = upTo;
        this.syncing = null;
      },
      (e: unknown) => {
        this.syncError ??= new OutputError(`cannot write ${this.path}: syncing it to disk failed (${(e as Error).message})`, this.path, { cause: e });
        this.syncing = null;
      },
    );
  }

  /** Append the record batch message of a whole shard held in memory; it is in the file when this resolves. */
  async appendShardBytes(shard: Uint8Array, what: string): Promise<void> {
    const frame = frameShard(shard, shard.byteLength, what);
    await this.append({ chunks: [shard.subarray(frame.offset, frame.offset + frame.length)], metaDataLength: frame.metaDataLength, bodyLength: frame.bodyLength });
    await this.guard(() => this.file!.flush());
  }

  /** Append the record batch message of a staged shard file, copied through a reused buffer; it is in the file when this resolves. */
  async appendShardFile(shardPath: string, what: string): Promise<void> {
    await this.guard(async () => {
      const src = await open(shardPath, 'r');
      try {
        const size = (await src.stat()).size;
        const head = Buffer.alloc(Math.min(size, 64 << 10));
        await src.read(head, 0, head.length, 0);
        let frame: ShardFrame;
        try {
          frame = frameShard(head, size, what);
        } catch (e) {
          if (!/truncated before/.test((e as Error).message) || head.length === size) throw e;
          const all = Buffer.alloc(size);
          await src.read(all, 0, size, 0);
          frame = frameShard(all, size, what);
        }
        this.blocks.push(new FileBlock(frame.metaDataLength, frame.bodyLength, this.offset));
        this.flushBehind();
        const buf = (this.copyBuffer ??= Buffer.allocUnsafeSlow(COPY_BUFFER_BYTES));
        for (let done = 0; done < frame.length; ) {
          const n = Math.min(buf.length, frame.length - done);
          const { bytesRead } = await src.read(buf, 0, n, frame.offset + done);
          if (bytesRead === 0) throw new FormatError(`${what}: shard file ends early`, shardPath);
          // the window copies the bytes before write() resolves: the buffer can be read into again
          await this.file!.write(buf.subarray(0, bytesRead), this.offset);
          this.offset += bytesRead;
          done += bytesRead;
        }
        await this.file!.flush();
      } finally {
        await src.close();
      }
    });
  }

  /** Footer, then the schema message (with `metadata`) into its reserved region, then rename. */
  async finish(metadata: Map<string, string>): Promise<void> {
    await this.guard(async () => {
      const schema = layerSchema(metadata);
      const message = schemaMessage(schema);
      if (message.byteLength > this.reserved) {
        throw new OutputError(`schema metadata needs ${message.byteLength} bytes but ${this.reserved} were reserved`, this.path);
      }
      const f = this.file!;
      const footer = Footer.encode(new Footer(schema, MetadataVersion.V5, this.blocks, []));
      for (const piece of [EOS, footer, Buffer.from(Int32Array.of(footer.byteLength).buffer), MAGIC.subarray(0, 6)]) {
        await f.write(piece, this.offset);
        this.offset += piece.byteLength;
      }
      await f.truncate(this.offset); // bytes of an abandoned writeAhead() may lie past the end
      // The schema message fills the reserved region: its length prefix counts the zero padding.
      const region = Buffer.alloc(this.reserved);
      Buffer.from(message).copy(region);
      region.writeInt32LE(this.reserved - 8, 4);
      await f.write(region, MAGIC.byteLength);
      await this.syncing;
      this.throwSyncError();
      await f.sync();
      await f.close();
      this.file = null;
      await rename(this.tmp, this.path);
    });
  }

  async abort(): Promise<void> {
    await this.syncing?.catch(() => undefined);
    await this.file?.discard();
    this.file = null;
    await rm(this.tmp, { force: true });
  }

  private throwSyncError(): void {
    if (this.syncError !== null) throw this.syncError;
  }

  private async guard(fn: () => Promise<void>): Promise<void> {
    try {
      this.throwSyncError();
      await fn();
    } catch (e) {
      await this.abort();
      throw e instanceof FormatError ? e : outputErrorFrom(this.path, e);
    }
  }
}
