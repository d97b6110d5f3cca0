import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { ModelFormatError } from '../core/errors.js';
import { openModel } from '../core/model/model-source.js';
import { parseSafetensorsHeader, readSafetensorsHeader } from '../core/model/safetensors-reader.js';
import { safetensorsHeader } from '../core/model/safetensors-writer.js';
import { seededRandom } from '../core/model/random.js';

const dir = mkdtempSync(join(tmpdir(), 'aq-reader-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const FIXTURES = join(__dirname, 'fixtures', 'stories260K');

/** A safetensors file from a raw header object (written verbatim) and a data length. */
function rawFile(header: unknown, dataBytes: number, opts: { lengthOverride?: bigint; headerText?: string } = {}): Buffer {
  const text = opts.headerText ?? JSON.stringify(header);
  const body = Buffer.from(text, 'utf8');
  const out = Buffer.alloc(8 + body.length + dataBytes);
  out.writeBigUInt64LE(opts.lengthOverride ?? BigInt(body.length), 0);
  body.copy(out, 8);
  return out;
}

function write(name: string, bytes: Uint8Array): string {
  const p = join(dir, name);
  writeFileSync(p, bytes);
  return p;
}

function expectFormatError(fn: () => unknown, re: RegExp, tensor?: string): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ModelFormatError);
  expect((err as Error).message).toMatch(re);
  if (tensor !== undefined) expect((err as ModelFormatError).tensor).toBe(tensor);
}

const good = {
  a: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] },
  b: { dtype: 'BF16', shape: [4], data_offsets: [16, 24] },
};

describe('safetensors reader', () => {
  test('safetensors reader - a valid file lists tensors in header order with absolute offsets', () => {
    const f = write('ok.safetensors', rawFile({ __metadata__: { format: 'pt' }, b: { ...good.b, data_offsets: [0, 8] }, a: { ...good.a, data_offsets: [8, 24] } }, 24));
    const h = readSafetensorsHeader(f);
    expect(h.tensors.map((t) => t.name)).toEqual(['b', 'a']);
    const headerLen = h.headerLength;
    expect(h.tensors[1]!.dataStart).toBe(8 + headerLen + 8);
    expect(h.metadata).toEqual({ format: 'pt' });
  });

  test('safetensors reader - keeps integer-like names in header order', () => {
    const f = write('intnames.safetensors', rawFile(null, 4, { headerText: '{"z":{"dtype":"F16","shape":[1],"data_offsets":[0,2]},"1":{"dtype":"F16","shape":[1],"data_offsets":[2,4]}}' }));
    expect(readSafetensorsHeader(f).tensors.map((t) => t.name)).toEqual(['z', '1']);
  });

  test('safetensors reader - file shorter than the length prefix', () => {
    expectFormatError(() => readSafetensorsHeader(write('tiny.safetensors', Buffer.from([1, 2, 3]))), /tiny\.safetensors: file is 3 bytes; a safetensors file starts with an 8-byte header length/);
  });

  test('safetensors reader - header length beyond the file', () => {
    const f = write('long.safetensors', rawFile(good, 24, { lengthOverride: 5000n }));
    expectFormatError(() => readSafetensorsHeader(f), /long\.safetensors: header length 5000 goes beyond the end of the file \(\d+ bytes\)/);
  });

  test('safetensors reader - header length over 100 MB', () => {
    const f = write('huge.safetensors', rawFile(good, 24, { lengthOverride: 100_000_001n }));
    expectFormatError(() => readSafetensorsHeader(f), /header length 100000001 exceeds the 100000000-byte limit/);
    const g = write('huge2.safetensors', rawFile(good, 24, { lengthOverride: 0xffffffffffffffffn }));
    expectFormatError(() => readSafetensorsHeader(g), /header length 18446744073709551615 exceeds/);
  });

  test('safetensors reader - invalid JSON and invalid UTF-8', () => {
    expectFormatError(() => readSafetensorsHeader(write('badjson.safetensors', rawFile(null, 0, { headerText: '{"a": {' }))), /badjson\.safetensors: header is not valid JSON/);
    const bytes = rawFile(null, 0, { headerText: '{"a":1}' });
    bytes[10] = 0xff;
    expectFormatError(() => readSafetensorsHeader(write('utf8.safetensors', bytes)), /header is not valid UTF-8/);
    expectFormatError(() => readSafetensorsHeader(write('array.safetensors', rawFile([1, 2], 0))), /header is not a JSON object/);
  });

  test('safetensors reader - missing fields', () => {
    for (const field of ['dtype', 'shape', 'data_offsets']) {
      const entry: Record<string, unknown> = { ...good.a };
      delete entry[field];
      const f = write(`missing-${field}.safetensors`, rawFile({ a: entry, b: { ...good.b, data_offsets: [0, 8] } }, 8));
      expectFormatError(() => readSafetensorsHeader(f), new RegExp(`tensor "a": missing field "${field}"`), 'a');
    }
    expectFormatError(() => readSafetensorsHeader(write('notobj.safetensors', rawFile({ a: 5 }, 0))), /tensor "a": entry is not an object/, 'a');
  });

  test('safetensors reader - unsupported and unknown dtypes', () => {
    const f = write('i64.safetensors', rawFile({ ids: { dtype: 'I64', shape: [2], data_offsets: [0, 16] } }, 16));
    expectFormatError(() => readSafetensorsHeader(f), /i64\.safetensors: tensor "ids": unsupported dtype "I64"; ArrowQuant reads F32, F16, BF16/, 'ids');
    const g = write('q9.safetensors', rawFile({ w: { dtype: 'Q9', shape: [2], data_offsets: [0, 2] } }, 2));
    expectFormatError(() => readSafetensorsHeader(g), /tensor "w": unknown dtype "Q9"/, 'w');
  });

  test('safetensors reader - shape times dtype size differs from the byte range', () => {
    const f = write('size.safetensors', rawFile({ a: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 16] } }, 16));
    expectFormatError(() => readSafetensorsHeader(f), /tensor "a": shape \[2,3\] × F32 is 24 bytes but data_offsets \[0, 16\] span 16/, 'a');
  });

  test('safetensors reader - bad shapes and offsets', () => {
    const f = write('negshape.safetensors', rawFile({ a: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, 4));
    expectFormatError(() => readSafetensorsHeader(f), /"shape" must be a list of non-negative integers/, 'a');
    const g = write('revoffs.safetensors', rawFile({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 0] } }, 4));
    expectFormatError(() => readSafetensorsHeader(g), /"data_offsets" must be \[begin, end\] with 0 ≤ begin ≤ end, got \[4,0\]/, 'a');
  });

  test('safetensors reader - offsets past the end of the file', () => {
    const f = write('past.safetensors', rawFile(good, 20));
    expectFormatError(() => readSafetensorsHeader(f), /tensor "b": data_offsets \[16, 24\] go past the end of the data \(20 bytes after the header\)/, 'b');
  });

  test('safetensors reader - overlapping tensors', () => {
    const f = write('overlap.safetensors', rawFile({ a: good.a, b: { ...good.b, data_offsets: [12, 20] } }, 20));
    expectFormatError(() => readSafetensorsHeader(f), /tensor "b": data_offsets \[12, 20\] overlap tensor "a"/, 'b');
  });

  test('safetensors reader - gaps between tensors and after the last one', () => {
    const f = write('gap.safetensors', rawFile({ a: good.a, b: { ...good.b, data_offsets: [20, 28] } }, 28));
    expectFormatError(() => readSafetensorsHeader(f), /tensor "b": data_offsets \[20, 28\] leave a gap: bytes \[16, 20\) belong to no tensor/, 'b');
    const g = write('tail.safetensors', rawFile(good, 30));
    expectFormatError(() => readSafetensorsHeader(g), /leaves a gap: bytes \[24, 30\) after the last tensor belong to no tensor/);
  });

  test('safetensors reader - a name twice in one header', () => {
    const text = '{"a":{"dtype":"F16","shape":[1],"data_offsets":[0,2]},"a":{"dtype":"F16","shape":[1],"data_offsets":[2,4]}}';
    const f = write('dup.safetensors', rawFile(null, 4, { headerText: text }));
    expectFormatError(() => readSafetensorsHeader(f), /tensor "a": appears twice in the header/, 'a');
  });

  test('safetensors reader - metadata must map strings to strings', () => {
    const f = write('meta.safetensors', rawFile({ __metadata__: { n: 1 }, ...good }, 24));
    expectFormatError(() => readSafetensorsHeader(f), /"__metadata__"\."n" must be a string/);
  });

  test('safetensors reader - sharded: a name twice across shards', () => {
    const d = join(dir, 'dup-shards');
    mkdirSync(d);
    writeFileSync(join(d, 'a.safetensors'), rawFile({ w: { dtype: 'F16', shape: [1], data_offsets: [0, 2] } }, 2));
    writeFileSync(join(d, 'b.safetensors'), rawFile({ w: { dtype: 'F16', shape: [1], data_offsets: [0, 2] } }, 2));
    expectFormatError(() => openModel(d), /tensor "w" appears in both a\.safetensors and b\.safetensors/, 'w');
  });

  test('safetensors reader - sharded: an index naming a missing file', () => {
    const d = join(dir, 'missing-shard');
    mkdirSync(d);
    writeFileSync(join(d, 'model-00001-of-00002.safetensors'), rawFile({ w: { dtype: 'F16', shape: [1], data_offsets: [0, 2] } }, 2));
    writeFileSync(join(d, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { w: 'model-00001-of-00002.safetensors', v: 'model-00002-of-00002.safetensors' } }));
    expectFormatError(() => openModel(d), /model\.safetensors\.index\.json: names shard "model-00002-of-00002\.safetensors" \(for tensor "v"\) which does not exist/, 'v');
  });

  test('safetensors reader - sharded: index and shards must agree', () => {
    const d = join(dir, 'disagree');
    mkdirSync(d);
    writeFileSync(join(d, 's1.safetensors'), rawFile({ w: { dtype: 'F16', shape: [1], data_offsets: [0, 2] }, x: { dtype: 'F16', shape: [1], data_offsets: [2, 4] } }, 4));
    writeFileSync(join(d, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { w: 's1.safetensors' } }));
    expectFormatError(() => openModel(d), /tensor "x" is not listed in model\.safetensors\.index\.json/, 'x');
    writeFileSync(join(d, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { w: 's1.safetensors', x: 's1.safetensors', y: 's1.safetensors' } }));
    expectFormatError(() => openModel(d), /lists tensor "y" in s1\.safetensors but that shard has no such tensor/, 'y');
    writeFileSync(join(d, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { w: '../etc/passwd.safetensors' } }));
    expectFormatError(() => openModel(d), /must be a \.safetensors file name in the same directory/);
  });

  test('safetensors reader - the real model, single file and sharded, in the same canonical order', () => {
    const single = openModel(join(FIXTURES, 'stories260K-bf16.safetensors'));
    const sharded = openModel(join(FIXTURES, 'stories260K-sharded'));
    expect(single.tensors.length).toBe(48);
    expect(single.tensors[0]!.name).toBe('model.embed_tokens.weight');
    expect(single.tensors.at(-1)!.name).toBe('lm_head.weight');
    expect(sharded.shards.length).toBe(2);
    expect(sharded.tensors.map((t) => [t.name, t.shape, t.dtype])).toEqual(single.tensors.map((t) => [t.name, t.shape, t.dtype]));
    expect(single.name).toBe('stories260K-bf16');
    expect(sharded.name).toBe('stories260K-sharded');
  });

  test('safetensors reader - fuzz: mutated headers give a tensor list or a ModelFormatError, nothing else', () => {
    const base = safetensorsHeader([
      { name: 'model.layers.0.self_attn.q_proj.weight', dtype: 'BF16', shape: [4, 8] },
      { name: 'model.norm.weight', dtype: 'F32', shape: [8] },
      { name: 'lm_head.weight', dtype: 'F16', shape: [3, 5] },
    ], { format: 'pt' });
    const dataLen = 64 + 32 + 30;
    const file = Buffer.concat([base, Buffer.alloc(dataLen)]);
    const rand = seededRandom(2024);
    const pick = (n: number) => Math.floor(rand() * n);
    let parsed = 0;
    let rejected = 0;
    const interesting = '{}[]":,0123456789-. e\\';
    for (let k = 0; k < 3000; k++) {
      const buf = Buffer.from(file);
      let size = buf.length;
      const mutations = 1 + pick(3);
      for (let m = 0; m < mutations; m++) {
        const kind = pick(6);
        const at = 8 + pick(base.length - 8);
        if (kind === 0) buf[at] = pick(256);
        else if (kind === 1) buf[at] = interesting.charCodeAt(pick(interesting.length));
        else if (kind === 2) buf.writeBigUInt64LE(BigInt(pick(base.length * 2)), 0);
        else if (kind === 3) size = pick(buf.length + 1);
        else if (kind === 4) buf[pick(8)] = pick(256);
        else {
          // swap two digits inside the header: offsets and shapes lie
          const digits = [...buf.subarray(8, base.length).entries()].filter(([, c]) => c >= 48 && c <= 57);
          if (digits.length) buf[8 + digits[pick(digits.length)]![0]] = 48 + pick(10);
        }
      }
      try {
        const h = parseSafetensorsHeader(buf.subarray(0, size), size, 'fuzz.safetensors');
        parsed++;
        // a header that parses describes the data buffer exactly
        const covered = h.tensors.reduce((s, t) => s + t.byteLength, 0);
        expect(covered).toBe(size - 8 - h.headerLength);
        for (const t of h.tensors) expect(t.dataStart + t.byteLength).toBeLessThanOrEqual(size);
      } catch (e) {
        if (!(e instanceof ModelFormatError)) throw e;
        expect(e.message).toMatch(/^(fuzz\.safetensors: |not a safetensors file: fuzz\.safetensors )/);
        expect(e.file).toBe('fuzz.safetensors');
        rejected++;
      }
    }
    expect(rejected).toBeGreaterThan(1000);
    expect(parsed).toBeGreaterThan(10);
  });
});
