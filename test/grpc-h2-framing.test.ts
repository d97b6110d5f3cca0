import { randomBytes } from 'node:crypto';
import { status as Status } from '@grpc/grpc-js';
import { describe, expect, test } from 'vitest';
import { parseUploadMessage } from '../coordinator/cluster/upload-messages.js';
import { GrpcCallError, MessageDecoder, encodeMessage, timeoutMs } from '../core/grpc/h2-framing.js';
import { grpcServices } from '../core/grpc/proto.js';

const upload = () => grpcServices().shardTransfer.definition.UploadShard!;
const headerMessage = () =>
  upload().requestSerialize({ header: { job_id: 'job-1', layer_index: 3, plan_hash: 'p', size: 10, sha256: 'ab'.repeat(32), worker_id: 'w1' } });

/** Feeds `bytes` to a decoder in pieces of the given sizes (the last piece takes the rest). */
function decodeIn(bytes: Buffer, sizes: number[], max = 1 << 20) {
  const d = new MessageDecoder(max, 'identity');
  const out: { pieces: Buffer[]; length: number }[] = [];
  let at = 0;
  for (const n of [...sizes, bytes.length]) {
    if (at >= bytes.length) break;
    d.write(bytes.subarray(at, Math.min(bytes.length, at + n)), (m) => out.push(m));
    at += n;
  }
  return { out, d };
}

function expectCallError(fn: () => unknown, code: Status, message: RegExp): void {
  let err: unknown = null;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(GrpcCallError);
  expect((err as GrpcCallError).code).toBe(code);
  expect((err as GrpcCallError).details).toMatch(message);
}

describe('grpc h2 framing', () => {
  test('grpc h2 framing - a message split across DATA buffers (inside the prefix too) comes out whole, as views of them', () => {
    const body = randomBytes(1000);
    const frame = encodeMessage(body);
    const { out, d } = decodeIn(frame, [2, 3, 400, 1]);
    expect(out).toHaveLength(1);
    expect(out[0]!.length).toBe(1000);
    expect(out[0]!.pieces.map((p) => p.length)).toEqual([400, 1, 599]);
    expect(Buffer.concat(out[0]!.pieces)).toEqual(body);
    expect(d.midMessage).toBeNull();
  });

  test('grpc h2 framing - several messages (an empty one among them) in one DATA buffer come out in order', () => {
    const a = randomBytes(7);
    const c = randomBytes(300);
    const { out } = decodeIn(Buffer.concat([encodeMessage(a), encodeMessage(new Uint8Array(0)), encodeMessage(c)]), []);
    expect(out.map((m) => m.length)).toEqual([7, 0, 300]);
    expect(Buffer.concat(out[0]!.pieces)).toEqual(a);
    expect(out[1]!.pieces).toEqual([]);
    expect(Buffer.concat(out[2]!.pieces)).toEqual(c);
  });

  test('grpc h2 framing - the messages before a refused one in the same DATA buffer are delivered first', () => {
    const d = new MessageDecoder(100, 'identity');
    const got: number[] = [];
    expectCallError(() => d.write(Buffer.concat([encodeMessage(Buffer.from([1, 2])), Buffer.from([0, 0, 0, 1, 0])]), (m) => got.push(m.length)), Status.RESOURCE_EXHAUSTED, /256 vs 100/);
    expect(got).toEqual([2]);
  });

  test('grpc h2 framing - a stream stopping inside a prefix or a message says where', () => {
    const frame = encodeMessage(randomBytes(50));
    expect(decodeIn(frame.subarray(0, 3), []).d.midMessage).toBe("after 3 of a message prefix's 5 bytes");
    expect(decodeIn(frame.subarray(0, 25), [10]).d.midMessage).toBe("after 20 of a message's 50 bytes");
  });

  test('grpc h2 framing - an oversize length prefix is RESOURCE_EXHAUSTED before any of its bytes are kept', () => {
    const prefix = Buffer.from([0, 0, 0x10, 0, 1]); // 1 MiB + 1
    expectCallError(() => new MessageDecoder(1 << 20, 'identity').write(prefix, () => undefined), Status.RESOURCE_EXHAUSTED, /^Received message larger than max \(1048577 vs 1048576\)$/);
  });

  test('grpc h2 framing - a compressed message is refused: INTERNAL without grpc-encoding, UNIMPLEMENTED with one', () => {
    const compressed = Buffer.from([1, 0, 0, 0, 1, 0x55]);
    expectCallError(() => new MessageDecoder(100, 'identity').write(compressed, () => undefined), Status.INTERNAL, /flagged compressed on a call without grpc-encoding/);
    expectCallError(() => new MessageDecoder(100, 'gzip').write(compressed, () => undefined), Status.UNIMPLEMENTED, /compressed with unsupported encoding "gzip"/);
    expectCallError(() => new MessageDecoder(100, 'identity').write(Buffer.from([7, 0, 0, 0, 0]), () => undefined), Status.INTERNAL, /flag byte 7/);
  });

  test('grpc h2 framing - grpc-timeout is read in every unit; a malformed one is ignored', () => {
    expect(timeoutMs('2S')).toBe(2000);
    expect(timeoutMs('1500m')).toBe(1500);
    expect(timeoutMs('3M')).toBe(180_000);
    expect(timeoutMs('100u')).toBeCloseTo(0.1);
    expect(timeoutMs('12')).toBeUndefined();
    expect(timeoutMs('123456789S')).toBeUndefined();
    expect(timeoutMs(undefined)).toBeUndefined();
  });
});

describe('grpc h2 upload messages', () => {
  test('grpc h2 upload messages - a chunk split mid-length comes out as views of the pieces, no copy', () => {
    const data = randomBytes(300); // length 300: a two-byte varint (0xac 0x02)
    const msg = Buffer.from(upload().requestSerialize({ chunk: data }));
    expect([...msg.subarray(0, 3)]).toEqual([0x12, 0xac, 0x02]);
    const pieces = [msg.subarray(0, 2), msg.subarray(2, 100), msg.subarray(100)];
    const m = parseUploadMessage({ pieces, length: msg.length }, 2);
    expect(m.chunk).toBeDefined();
    const chunk = m.chunk!;
    expect(Buffer.concat(chunk)).toEqual(data);
    expect(chunk[0]!.buffer).toBe(pieces[1]!.buffer);
    expect(chunk[0]!.byteOffset).toBe(pieces[1]!.byteOffset + 1);
    expect(m).toMatchObject({ bytes: 300 });
  });

  test('grpc h2 upload messages - a header goes through the proto deserializer', () => {
    const msg = Buffer.from(headerMessage());
    const m = parseUploadMessage({ pieces: [msg.subarray(0, 5), msg.subarray(5)], length: msg.length }, 1);
    expect(m.header).toMatchObject({ job_id: 'job-1', layer_index: 3, size: 10, worker_id: 'w1' });
  });

  test('grpc h2 upload messages - another field, a field after the chunk, a bad length or an empty message is INVALID_ARGUMENT', () => {
    const one = (bytes: number[] | Buffer, n = 2) => () => parseUploadMessage({ pieces: [Buffer.from(bytes)], length: bytes.length }, n);
    expectCallError(one([0x1a, 0x01, 0x00]), Status.INVALID_ARGUMENT, /^message 2 starts with field tag 0x1a \(field 3, wire type 2\); an upload message holds a header \(field 1\) or a chunk \(field 2\) only$/);
    expectCallError(one([0x10, 0x05]), Status.INVALID_ARGUMENT, /field tag 0x10 \(field 2, wire type 0\)/);
    expectCallError(one([0x12, 0x02, 0xaa, 0xbb, 0x18, 0x01]), Status.INVALID_ARGUMENT, /^message 2 declares a chunk of 2 bytes but holds 4 after its length; other or repeated fields are refused$/);
    expectCallError(one([0x12, 0x05, 0xaa]), Status.INVALID_ARGUMENT, /declares a chunk of 5 bytes but holds 1/);
    expectCallError(one([0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]), Status.INVALID_ARGUMENT, /^message 2 has a malformed chunk length \(varint\)$/);
    expectCallError(one([0x12, 0x80]), Status.INVALID_ARGUMENT, /malformed chunk length/);
    expectCallError(one([], 4), Status.INVALID_ARGUMENT, /^message 4 is empty: neither a header nor a chunk$/);
    const headerThenChunk = Buffer.concat([Buffer.from(headerMessage()), Buffer.from([0x12, 0x01, 0x00])]);
    expectCallError(one(headerThenChunk, 1), Status.INVALID_ARGUMENT, /^message 1 holds a header and a chunk/);
    expectCallError(one([0x0a, 0x05, 0x0a], 1), Status.INVALID_ARGUMENT, /^message 1 is not a valid UploadShardRequest: /);
  });
});
