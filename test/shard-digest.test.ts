import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, test } from 'vitest';
import { encodeShardChunks } from '../core/format/arrow-file.js';
import type { LayerRecord } from '../core/format/layer-schema.js';
import { ShardDigest, dataRangeIn, digestChunks, digestShard } from '../core/format/shard-digest.js';

const sha = (...parts: Uint8Array[]) => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
};
const u64 = (n: number) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
};

function record(data: Uint8Array): LayerRecord {
  return {
    layer_name: 'model.layers.0.mlp.up_proj.weight', layer_index: 0, shape: [1, data.length * 2], source_dtype: 'BF16', quant_type: 'int4', bit_width: 4,
    method: 'base', group_size: 128, data, scales: new Uint16Array(8).fill(0x3c00), zero_points: new Uint16Array(8),
    equalization_scales: null, act_bit_width: null, time_group_params: null, sqnr_db: 20, cosine: Math.fround(0.99),
    planned_bit_width: 4, notes: null, data_sha256: sha(data).toString('hex'),
  };
}

describe('shard digest', () => {
  test("shard digest - is SHA-256 over the domain, size and range, the bytes before the data, the data's SHA-256, the bytes after", () => {
    const bytes = randomBytes(10_000);
    const range = { offset: 1_000, length: 7_000 };
    const want = sha(
      Buffer.from('arrowquant shard digest 1\n'), u64(10_000), u64(1_000), u64(7_000),
      bytes.subarray(0, 1_000), sha(bytes.subarray(1_000, 8_000)), bytes.subarray(8_000),
    ).toString('hex');
    expect(digestChunks([bytes], range)).toBe(want);
    // fed in pieces that straddle the range's edges: the same
    const d = new ShardDigest(bytes.length, range);
    for (const cut of [[0, 999], [999, 1_001], [1_001, 7_999], [7_999, 8_001], [8_001, 10_000]]) d.update(bytes.subarray(cut[0], cut[1]));
    expect(d.digest()).toBe(want);
    expect(d.dataSha256()).toBe(sha(bytes.subarray(1_000, 8_000)).toString('hex'));
    // the data's hash given instead of its bytes hashed: the same digest
    const known = new ShardDigest(bytes.length, range, sha(bytes.subarray(1_000, 8_000)).toString('hex'));
    known.update(bytes);
    expect(known.digest()).toBe(want);
    // any other range, or a changed byte anywhere, gives another digest
    expect(digestChunks([bytes], { offset: 1_000, length: 6_999 })).not.toBe(want);
    for (const at of [5, 5_000, 9_990]) {
      const changed = Buffer.from(bytes);
      changed[at]! ^= 1;
      expect(digestChunks([changed], range)).not.toBe(want);
    }
  });

  test("shard digest - the encoder's chunks hold the record's data as a view; the decoded shard finds the same range and digest", async () => {
    const data = randomBytes(3 << 20);
    const chunks = await encodeShardChunks(record(data));
    const range = dataRangeIn(chunks, data)!;
    expect(range.length).toBe(data.length);
    const whole = Buffer.concat(chunks);
    expect(Buffer.compare(whole.subarray(range.offset, range.offset + range.length), data)).toBe(0);
    const found = digestShard(whole);
    expect(found.range).toEqual(range);
    expect(found.sha256).toBe(digestChunks(chunks, range));
    expect(found.dataSha256).toBe(sha(data).toString('hex'));
    // bytes that are no shard: the empty range, still a digest of every byte
    const junk = randomBytes(100);
    expect(digestShard(junk)).toMatchObject({ range: { offset: 0, length: 0 }, sha256: digestChunks([junk], { offset: 0, length: 0 }) });
  });

  test('shard digest - a range outside the shard or more bytes than it holds are refused', () => {
    expect(() => new ShardDigest(100, { offset: 90, length: 20 })).toThrow(/data range \[90, 110\) is not within the shard's 100 bytes/);
    const d = new ShardDigest(10, { offset: 0, length: 5 });
    expect(() => d.update(new Uint8Array(11))).toThrow(/more than the shard's 10 bytes/);
    d.update(new Uint8Array(4));
    expect(() => d.digest()).toThrow(/4 of the shard's 10 bytes given/);
  });
});
