import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { RecordBatchFileReader, Table, tableFromIPC, tableToIPC } from 'apache-arrow';
import { ArrowFileAssembler, decodeShard, encodeShard } from '../core/format/arrow-file.js';
import { batchToRecord, layerBatch, layerSchema, type LayerRecord } from '../core/format/layer-schema.js';
import { FormatError } from '../core/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'aq-arrow-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function record(i: number, extra: Partial<LayerRecord> = {}): LayerRecord {
  return {
    layer_name: `model.layers.${i}.mlp.up_proj.weight`, layer_index: i, shape: [3, 5], source_dtype: 'BF16',
    quant_type: 'int4', bit_width: 4, method: 'base', group_size: 32, data: Uint8Array.from({ length: 8 }, (_, k) => k * 17 + i),
    scales: Uint16Array.of(0x3c00, 0x3800, 0x3400), zero_points: Uint16Array.of(0, 0x4000, 0x4200),
    equalization_scales: null, act_bit_width: null, time_group_params: null, sqnr_db: 20.5 + i, cosine: Math.fround(0.99), planned_bit_width: 4,
    notes: null, data_sha256: 'ab'.repeat(32), ...extra,
  };
}

describe('arrow file', () => {
  test('arrow file - a shard round-trips every column', () => {
    const r = record(7, {
      method: 'time_aware', act_bit_width: 8, notes: 'n',
      time_group_params: [{ t_start: 0, t_end: 99, scale: 0.5, zero_point: 3 }, { t_start: 100, t_end: 999, scale: 0.25, zero_point: -1 }],
    });
    const back = decodeShard(encodeShard(r)).record;
    expect({ ...back, data: Array.from(back.data), scales: Array.from(back.scales), zero_points: Array.from(back.zero_points) })
      .toEqual({ ...r, data: Array.from(r.data), scales: Array.from(r.scales), zero_points: Array.from(r.zero_points) });
    const sp = decodeShard(encodeShard(record(1, { method: 'spatial', equalization_scales: Float32Array.of(1, 2, 3, 4, 5) }))).record;
    expect(Array.from(sp.equalization_scales!)).toEqual([1, 2, 3, 4, 5]);
  });

  test('arrow file - assembled file is the Arrow stream of the batches framed by magic and footer', async () => {
    const meta = new Map([['arrowquant.format_version', '1'], ['k', 'v'.repeat(100)]]);
    const records = [record(0), record(1, { method: 'spatial', equalization_scales: Float32Array.of(1, 2, 3, 4, 5) }), record(2, { notes: 'x' })];
    const path = join(dir, 'a.arrow');
    const asm = await ArrowFileAssembler.create(path, meta);
    for (const r of records) await asm.append(decodeShard(encodeShard(r)));
    await asm.finish();
    const schema = layerSchema(meta);
    const stream = tableToIPC(new Table(records.map((r) => layerBatch(r, schema))), 'stream');
    const got = readFileSync(path);
    expect(got.subarray(0, 8).toString('latin1')).toBe('ARROW1\0\0');
    expect(Buffer.compare(got.subarray(8, 8 + stream.byteLength), Buffer.from(stream))).toBe(0);
    expect(got.subarray(got.length - 6).toString('latin1')).toBe('ARROW1');
    // apache-arrow's own file reader, through the footer, agrees
    const reader = RecordBatchFileReader.from(got).open();
    expect(reader.numRecordBatches).toBe(3);
    expect(batchToRecord(reader.readRecordBatch(2)!).notes).toBe('x');
    const t = tableFromIPC(got);
    expect(t.numRows).toBe(3);
    expect(t.schema.metadata.get('k')).toBe('v'.repeat(100));
    expect(batchToRecord(t.batches[1]!).equalization_scales).toEqual(Float32Array.of(1, 2, 3, 4, 5));
    expect(existsSync(`${path}.tmp-${process.pid}`)).toBe(false);
  });

  test('arrow file - malformed shards are rejected with FormatError', () => {
    const good = encodeShard(record(0));
    expect(() => decodeShard(good.subarray(0, 10), 'short')).toThrow(FormatError);
    expect(() => decodeShard(good.subarray(0, good.length - 8), 'noeos')).toThrow(/noeos: does not end with the end-of-stream marker/);
    const bad = Uint8Array.from(good);
    bad[0] = 0;
    expect(() => decodeShard(bad, 'nocont')).toThrow(/nocont: no IPC message at byte 0/);
    const other = tableToIPC(tableFromIPC(tableToIPC(new Table({}), 'stream')), 'stream');
    expect(() => decodeShard(other, 'empty')).toThrow(FormatError);
  });
});
