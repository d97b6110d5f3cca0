// The messages of an UploadShard call, read from the transport (core/grpc/h2-server.ts) without
// copying a chunk: a chunk message is exactly field 2 (bytes), parsed by hand, and its bytes stay
// the pieces they arrived in. The header message goes through the proto's own deserializer.
// Anything else (another field, a field after the chunk, a malformed length) is refused.

import { status as Status } from '@grpc/grpc-js';
import { GrpcCallError, joinPieces } from '../../core/grpc/h2-framing.js';
import type { H2Call, ReceivedMessage } from '../../core/grpc/h2-server.js';
import { grpcServices, type ShardHeader, type UploadShardRequest } from '../../core/grpc/proto.js';

export type UploadMessage = { header: ShardHeader; chunk?: undefined } | { chunk: readonly Buffer[]; bytes: number; header?: undefined };

const HEADER_TAG = 0x0a; // field 1, wire type 2
const CHUNK_TAG = 0x12; // field 2, wire type 2
/** a length up to 2^35 fits in 5 varint bytes, more than any message the transport accepts */
const MAX_VARINT_BYTES = 5;

/** Reads an upload's messages in order; next() throws GrpcCallError for one that is not a header or a chunk. */
export class UploadMessages {
  private count = 0;

  constructor(private readonly call: H2Call) {}

  async next(): Promise<UploadMessage | null> {
    const m = await this.call.next();
    return m === null ? null : parseUploadMessage(m, ++this.count);
  }

  /** Nothing more is read: the rest of the stream is dropped. */
  close(): void {
    this.call.stopReading();
  }
}

/** Message `n` (1-based) of an upload as a header or as a chunk's pieces. */
export function parseUploadMessage(m: ReceivedMessage, n: number): UploadMessage {
  const bad = (why: string): never => {
    throw new GrpcCallError(Status.INVALID_ARGUMENT, `message ${n} ${why}`);
  };
  const at = new PieceCursor(m.pieces);
  if (m.length === 0) bad('is empty: neither a header nor a chunk');
  const tag = at.byte();
  if (tag === HEADER_TAG) {
    let decoded: UploadShardRequest;
    try {
      decoded = grpcServices().shardTransfer.definition.UploadShard!.requestDeserialize(joinPieces(m.pieces, m.length)) as UploadShardRequest;
    } catch (e) {
      return bad(`is not a valid UploadShardRequest: ${(e as Error).message}`);
    }
    if (!decoded.header || decoded.chunk !== undefined) bad('holds a header and a chunk; a message carries one of them');
    return { header: decoded.header! };
  }
  if (tag !== CHUNK_TAG) bad(`starts with field tag 0x${tag.toString(16)} (field ${tag >> 3}, wire type ${tag & 7}); an upload message holds a header (field 1) or a chunk (field 2) only`);
  let length = 0;
  for (let i = 0; ; i++) {
    if (i === MAX_VARINT_BYTES || at.offset === m.length) bad('has a malformed chunk length (varint)');
    const b = at.byte();
    length += (b & 0x7f) * 2 ** (7 * i);
    if ((b & 0x80) === 0) break;
  }
  const rest = m.length - at.offset;
  if (length !== rest) bad(`declares a chunk of ${length} bytes but holds ${rest} after its length; other or repeated fields are refused`);
  return { chunk: at.rest(), bytes: length };
}

/** Reads bytes across a message's pieces. */
class PieceCursor {
  offset = 0;
  private piece = 0;
  private within = 0;

  constructor(private readonly pieces: readonly Buffer[]) {}

  byte(): number {
    while (this.within >= this.pieces[this.piece]!.length) (this.piece++, (this.within = 0));
    this.offset++;
    return this.pieces[this.piece]![this.within++]!;
  }

  /** The pieces from the cursor on, as views. */
  rest(): Buffer[] {
    const out: Buffer[] = [];
    for (let p = this.piece; p < this.pieces.length; p++) {
      const view = p === this.piece ? this.pieces[p]!.subarray(this.within) : this.pieces[p]!;
      if (view.length > 0) out.push(view);
    }
    return out;
  }
}
