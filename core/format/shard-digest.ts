// A shard's digest: the SHA-256 a shard is uploaded, staged and recorded under. It covers every
// byte of the shard, but its data buffer — nearly all of it — through that buffer's own SHA-256,
// which the format carries anyway (data_sha256) and the coordinator checks; so each byte is hashed
// once, on the worker and on the coordinator:
//   SHA-256( DOMAIN ‖ u64le size ‖ u64le data_offset ‖ u64le data_length
//            ‖ bytes[0, data_offset) ‖ SHA-256(data) ‖ bytes[data_offset + data_length, size) )
// The data range is declared by the uploader and checked against the decoded shard.

import { createHash, type Hash } from 'node:crypto';
import { decodeShard } from './arrow-file.js';

/** Where the data buffer lies in a shard's bytes. */
export interface DataRange {
  offset: number;
  length: number;
}

const DOMAIN = Buffer.from('arrowquant shard digest 1\n');

/** The digest of a shard fed in order, piece by piece; also the data buffer's SHA-256. */
export class ShardDigest {
  private readonly outer: Hash = createHash('sha256');
  private readonly data: Hash = createHash('sha256');
  private position = 0;
  private dataHash: Buffer | null = null;
  private readonly dataEnd: number;

  /** `dataSha256`: the data buffer's SHA-256 when it is already known (its bytes are then not hashed again) */
  constructor(
    readonly size: number,
    readonly range: DataRange,
    private readonly knownDataSha256?: string,
  ) {
    if (!(range.offset >= 0 && range.length >= 0 && range.offset + range.length <= size)) {
      throw new RangeError(`data range [${range.offset}, ${range.offset + range.length}) is not within the shard's ${size} bytes`);
    }
    this.dataEnd = range.offset + range.length;
    const head = Buffer.alloc(24);
    head.writeBigUInt64LE(BigInt(size), 0);
    head.writeBigUInt64LE(BigInt(range.offset), 8);
    head.writeBigUInt64LE(BigInt(range.length), 16);
    this.outer.update(DOMAIN).update(head);
  }

  /** The next bytes of the shard. */
  update(bytes: Uint8Array): void {
    if (this.position + bytes.byteLength > this.size) throw new RangeError(`more than the shard's ${this.size} bytes`);
    for (let i = 0; i < bytes.byteLength; ) {
      const p = this.position;
      let take: number;
      if (p < this.range.offset) {
        take = Math.min(bytes.byteLength - i, this.range.offset - p);
        this.outer.update(bytes.subarray(i, i + take));
      } else if (p < this.dataEnd) {
        take = Math.min(bytes.byteLength - i, this.dataEnd - p);
        if (this.knownDataSha256 === undefined) this.data.update(bytes.subarray(i, i + take));
      } else {
        this.endData();
        take = bytes.byteLength - i;
        this.outer.update(bytes.subarray(i));
      }
      i += take;
      this.position += take;
    }
  }

  /** The data buffer's SHA-256 (hex); every byte of it must have been given. */
  dataSha256(): string {
    if (this.position < this.dataEnd) throw new RangeError('the data buffer is not complete');
    this.endData();
    return this.dataHash!.toString('hex');
  }

  /** The shard's digest (hex); every byte of the shard must have been given. */
  digest(): string {
    if (this.position !== this.size) throw new RangeError(`${this.position} of the shard's ${this.size} bytes given`);
    this.endData();
    return this.outer.digest('hex');
  }

  private endData(): void {
    if (this.dataHash !== null) return;
    this.dataHash = this.knownDataSha256 === undefined ? this.data.digest() : Buffer.from(this.knownDataSha256, 'hex');
    this.outer.update(this.dataHash);
  }
}

/** Where `data` (a view into the shard's memory, as decodeShard and the encoder give it) lies among `chunks`. */
export function dataRangeIn(chunks: readonly Uint8Array[], data: Uint8Array): DataRange | null {
  let at = 0;
  for (const c of chunks) {
    if (c.buffer === data.buffer && data.byteOffset >= c.byteOffset && data.byteOffset + data.byteLength <= c.byteOffset + c.byteLength) {
      return { offset: at + data.byteOffset - c.byteOffset, length: data.byteLength };
    }
    at += c.byteLength;
  }
  return null;
}

/**
 * The digest of a whole shard in memory, the data range it was taken with — the decoded data
 * buffer's, or an empty range for bytes that do not decode (their digest still names them
 * exactly) — and the data's SHA-256.
 */
export function digestShard(bytes: Uint8Array): { sha256: string; range: DataRange; dataSha256: string } {
  let range: DataRange = { offset: 0, length: 0 };
  try {
    range = dataRangeIn([bytes], decodeShard(bytes).record.data) ?? range;
  } catch {
    // not a shard: the empty range
  }
  const d = new ShardDigest(bytes.byteLength, range);
  d.update(bytes);
  return { sha256: d.digest(), range, dataSha256: d.dataSha256() };
}

/** The digest of a shard given as consecutive chunks, with its data at `range`. */
export function digestChunks(chunks: readonly Uint8Array[], range: DataRange): string {
  const d = new ShardDigest(
    chunks.reduce((s, c) => s + c.byteLength, 0),
    range,
  );
  for (const c of chunks) d.update(c);
  return d.digest();
}
