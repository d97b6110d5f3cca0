import { mkdtempSync, readFileSync, readdirSync, rmSync, existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { RecordBatchFileReader, Table, tableFromIPC, tableToIPC } from 'apache-arrow';
import { ArrowFileAssembler, decodeShard, encodeBatchMessage, encodeShard, encodeShardChunks, schemaReservation } from '../core/format/arrow-file.js';
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

  test('arrow file - assembled file: magic, padded schema message, the batches as apache-arrow streams them, footer', async () => {
    const meta = new Map([['arrowquant.format_version', '1'], ['k', 'v'.repeat(100)]]);
    const records = [record(0), record(1, { method: 'spatial', equalization_scales: Float32Array.of(1, 2, 3, 4, 5) }), record(2, { notes: 'x' })];
    const path = join(dir, 'a.arrow');
    const reserved = schemaReservation(new Map([['arrowquant.format_version', '1'], ['k', 'v'.repeat(140)]]));
    const asm = await ArrowFileAssembler.create(path, reserved);
    await asm.append(await encodeBatchMessage(records[0]!));
    const shardFile = join(dir, 'one.shard');
    // the chunks a worker uploads are exactly the shard apache-arrow writes
    writeFileSync(shardFile, Buffer.concat(await encodeShardChunks(records[1]!)));
    expect(Buffer.compare(readFileSync(shardFile), Buffer.from(encodeShard(records[1]!)))).toBe(0);
    await asm.appendShardFile(shardFile, 'shard 1');
    await asm.append(await encodeBatchMessage(records[2]!));
    await asm.finish(meta);
    const schema = layerSchema(meta);
    const stream = Buffer.from(tableToIPC(new Table(records.map((r) => layerBatch(r, schema))), 'stream'));
    const got = readFileSync(path);
    expect(got.subarray(0, 8).toString('latin1')).toBe('ARROW1\0\0');
    // the schema message fills the reserved region; its length prefix counts the zero padding
    const natural = stream.readInt32LE(4) + 8;
    expect(got.readUInt32LE(8)).toBe(0xffffffff);
    expect(got.readInt32LE(12)).toBe(reserved - 8);
    expect(Buffer.compare(got.subarray(16, 8 + natural), stream.subarray(8, natural))).toBe(0);
    expect(got.subarray(8 + natural, 8 + reserved).every((b) => b === 0)).toBe(true);
    // then exactly the batch messages and end-of-stream apache-arrow writes
    const batches = stream.subarray(natural);
    expect(Buffer.compare(got.subarray(8 + reserved, 8 + reserved + batches.length), batches)).toBe(0);
    expect(got.subarray(got.length - 6).toString('latin1')).toBe('ARROW1');
    const t = tableFromIPC(got);
    expect(t.numRows).toBe(3);
    expect(t.schema.metadata.get('k')).toBe('v'.repeat(100));
    expect(batchToRecord(t.batches[1]!).equalization_scales).toEqual(Float32Array.of(1, 2, 3, 4, 5));
    const reader = RecordBatchFileReader.from(got).open();
    expect(reader.numRecordBatches).toBe(3);
    expect(batchToRecord(reader.readRecordBatch(2)!).notes).toBe('x');
    expect(readdirSync(dir).filter((f) => f.includes('.tmp'))).toEqual([]);
  });

  test('arrow file - metadata larger than the reservation is refused and nothing is left', async () => {
    const path = join(dir, 'b.arrow');
    const asm = await ArrowFileAssembler.create(path, schemaReservation(new Map([['k', 'v']])));
    await asm.append(await encodeBatchMessage(record(0)));
    await expect(asm.finish(new Map([['k', 'v'.repeat(500)]]))).rejects.toThrow(/reserved/);
    expect(existsSync(path)).toBe(false);
    expect(readdirSync(dir).filter((f) => f.startsWith('b.arrow'))).toEqual([]);
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
