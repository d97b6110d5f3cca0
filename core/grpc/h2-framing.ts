// gRPC's length-prefixed message framing (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md)
// as the bytes of an HTTP/2 stream arrive: each message is handed on as the pieces it arrived
// in (views into the received DATA buffers, never concatenated), so that a 1 MiB chunk is hashed
// and written from the buffers node:http2 gave us. Also the one-message encoder for responses
// and the parsing of the grpc-timeout header.

import { status as Status } from '@grpc/grpc-js';

/** A call's failure the transport itself detects (framing, size, encoding): the status to answer with. */
export class GrpcCallError extends Error {
  constructor(
    readonly code: Status,
    readonly details: string,
  ) {
    super(details);
    this.name = 'GrpcCallError';
  }
}

const PREFIX_BYTES = 5;

/** Splits a stream of DATA buffers into messages; throws GrpcCallError on a message it must refuse. */
export class MessageDecoder {
  private readonly prefix = Buffer.alloc(PREFIX_BYTES);
  private prefixFill = 0;
  /** bytes of the current message still to come; -1 while reading a prefix */
  private left = -1;
  private pieces: Buffer[] = [];
  private length = 0;

  constructor(
    private readonly maxMessageBytes: number,
    /** the call's grpc-encoding ("identity" when absent) */
    private readonly encoding: string,
  ) {}

  /** Where the stream stopped inside a message (it must not end there), or null between messages. */
  get midMessage(): string | null {
    if (this.prefixFill > 0) return `after ${this.prefixFill} of a message prefix's ${PREFIX_BYTES} bytes`;
    return this.left >= 0 ? `after ${this.length - this.left} of a message's ${this.length} bytes` : null;
  }

  /**
   * Feeds one DATA buffer; each message it completes goes to `take` as its pieces and length,
   * in order, before a later one in the same buffer can throw.
   */
  write(data: Buffer, take: (m: { pieces: Buffer[]; length: number }) => void): void {
    let i = 0;
    while (i < data.length || this.left === 0) {
      if (this.left < 0) {
        const n = Math.min(PREFIX_BYTES - this.prefixFill, data.length - i);
        data.copy(this.prefix, this.prefixFill, i, i + n);
        this.prefixFill += n;
        i += n;
        if (this.prefixFill < PREFIX_BYTES) break;
        this.prefixFill = 0;
        this.startMessage();
        continue;
      }
      if (this.left > 0) {
        const n = Math.min(this.left, data.length - i);
        this.pieces.push(data.subarray(i, i + n));
        i += n;
        this.left -= n;
      }
      if (this.left === 0) {
        const m = { pieces: this.pieces, length: this.length };
        this.pieces = [];
        this.left = -1;
        take(m);
      }
    }
  }

  private startMessage(): void {
    const flag = this.prefix[0]!;
    const length = this.prefix.readUInt32BE(1);
    if (flag > 1) throw new GrpcCallError(Status.INTERNAL, `message prefix has flag byte ${flag}; only 0 (plain) and 1 (compressed) exist`);
    if (length > this.maxMessageBytes) {
      throw new GrpcCallError(Status.RESOURCE_EXHAUSTED, `Received message larger than max (${length} vs ${this.maxMessageBytes})`);
    }
    // Our clients never compress (1 MiB chunks of packed codes do not shrink); refuse rather than inflate.
    if (flag === 1) {
      throw this.encoding === 'identity'
        ? new GrpcCallError(Status.INTERNAL, 'received a message flagged compressed on a call without grpc-encoding')
        : new GrpcCallError(Status.UNIMPLEMENTED, `Received message compressed with unsupported encoding "${this.encoding.slice(0, 40)}"`);
    }
    this.length = length;
    this.left = length;
  }
}

/** One message with its 5-byte prefix (never compressed). */
export function encodeMessage(body: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(PREFIX_BYTES + body.byteLength);
  frame[0] = 0;
  frame.writeUInt32BE(body.byteLength, 1);
  frame.set(body, PREFIX_BYTES);
  return frame;
}

/** One buffer holding a message's pieces (for the small ones: headers, requests of unary calls). */
export function joinPieces(pieces: readonly Buffer[], length: number): Buffer {
  return pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces, length);
}

const TIMEOUT_UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000_001 };

/** The grpc-timeout header in milliseconds, undefined when absent or malformed (as grpc-js ignores it). */
export function timeoutMs(header: string | string[] | undefined): number | undefined {
  const m = typeof header === 'string' ? /^(\d{1,8})([HMSmun])$/.exec(header.trim()) : null;
  return m ? Number(m[1]) * TIMEOUT_UNIT_MS[m[2]!]! : undefined;
}
