// The columns of format.md, exactly, and one layer as one Arrow record batch (one row).
// Data are built directly with makeData so that every buffer is exactly what we put there:
// the encoded bytes depend only on the layer, never on how or where it was computed.

import {
  Field, Float16, Float32, Int64, LargeBinary, List, RecordBatch, Schema, Struct, Uint32, Uint8, Utf8, makeData,
  type Data, type DataType,
} from 'apache-arrow';
import type { SourceDtype } from '../quant/dtype.js';
import type { TimeGroupParam } from '../quant/calibration.js';

/** int*_dq: format v2 (double-quantized group params; docs/format.md "Version 2"). */
export type QuantType = 'int2' | 'int4' | 'int8' | 'int2_dq' | 'int4_dq' | 'int8_dq' | 'f16' | 'bf16' | 'f32';
export type OutputMethod = 'base' | 'spatial' | 'time_aware' | 'none';

/** One row of the output file. */
export interface LayerRecord {
  layer_name: string;
  layer_index: number;
  shape: number[];
  source_dtype: SourceDtype;
  quant_type: QuantType;
  bit_width: number;
  method: OutputMethod;
  group_size: number;
  data: Uint8Array;
  /** float16 bits */
  scales: Uint16Array;
  zero_points: Uint16Array;
  equalization_scales: Float32Array | null;
  act_bit_width: number | null;
  time_group_params: TimeGroupParam[] | null;
  sqnr_db: number;
  cosine: number;
  planned_bit_width: number;
  notes: string | null;
  data_sha256: string;
}

const item = (t: DataType) => new Field('item', t, false);
const timeGroupStruct = new Struct([
  new Field('t_start', new Uint32(), false),
  new Field('t_end', new Uint32(), false),
  new Field('scale', new Float32(), false),
  new Field('zero_point', new Float32(), false),
]);

export const LAYER_FIELDS: Field[] = [
  new Field('layer_name', new Utf8(), false),
  new Field('layer_index', new Uint32(), false),
  new Field('shape', new List(item(new Int64())), false),
  new Field('source_dtype', new Utf8(), false),
  new Field('quant_type', new Utf8(), false),
  new Field('bit_width', new Uint8(), false),
  new Field('method', new Utf8(), false),
  new Field('group_size', new Uint32(), false),
  new Field('data', new LargeBinary(), false),
  new Field('scales', new List(item(new Float16())), false),
  new Field('zero_points', new List(item(new Float16())), false),
  new Field('equalization_scales', new List(item(new Float32())), true),
  new Field('act_bit_width', new Uint8(), true),
  new Field('time_group_params', new List(new Field('item', timeGroupStruct, false)), true),
  new Field('sqnr_db', new Float32(), false),
  new Field('cosine', new Float32(), false),
  new Field('planned_bit_width', new Uint8(), false),
  new Field('notes', new Utf8(), true),
  new Field('data_sha256', new Utf8(), false),
];

export const COLUMN_NAMES = LAYER_FIELDS.map((f) => f.name);

export function layerSchema(metadata?: Map<string, string>): Schema {
  return new Schema(LAYER_FIELDS, metadata);
}

const NULL_BITMAP = Uint8Array.of(0);

function scalar(type: DataType, values: ArrayLike<unknown> & { buffer: ArrayBufferLike }, isNull = false): Data {
  return makeData({ type, length: 1, nullCount: isNull ? 1 : 0, ...(isNull ? { nullBitmap: NULL_BITMAP } : {}), data: values } as never) as Data;
}

function utf8(s: string | null): Data<Utf8> {
  const bytes = s === null ? new Uint8Array(0) : Buffer.from(s, 'utf8');
  return makeData({
    type: new Utf8(), length: 1, nullCount: s === null ? 1 : 0, ...(s === null ? { nullBitmap: NULL_BITMAP } : {}),
    valueOffsets: Int32Array.of(0, bytes.length), data: bytes,
  });
}

function list(field: Field, child: Data | null, childLength: number): Data {
  const type = field.type as List;
  if (child === null) {
    const empty = makeData({ type: type.children[0]!.type, length: 0, nullCount: 0, ...emptyChild(type.children[0]!.type) } as never);
    return makeData({ type, length: 1, nullCount: 1, nullBitmap: NULL_BITMAP, valueOffsets: Int32Array.of(0, 0), child: empty } as never) as Data;
  }
  return makeData({ type, length: 1, nullCount: 0, valueOffsets: Int32Array.of(0, childLength), child } as never) as Data;
}

function emptyChild(t: DataType): object {
  if (t instanceof Struct) {
    return { children: t.children.map((f) => makeData({ type: f.type, length: 0, nullCount: 0, data: new (typedArrayFor(f.type))(0) } as never)) };
  }
  return { data: new (typedArrayFor(t))(0) };
}

function typedArrayFor(t: DataType): new (n: number) => ArrayLike<number> & { buffer: ArrayBufferLike } {
  if (t instanceof Float32) return Float32Array;
  if (t instanceof Uint32) return Uint32Array;
  if (t instanceof Float16) return Uint16Array;
  throw new Error(`no typed array for ${t}`);
}

const field = (name: string) => LAYER_FIELDS.find((f) => f.name === name)!;

/** One layer as a record batch of `schema` (which carries the file's metadata, or none for a shard). */
export function layerBatch(r: LayerRecord, schema: Schema = layerSchema()): RecordBatch {
  const tg = r.time_group_params;
  const tgChild =
    tg === null
      ? null
      : makeData({
          type: timeGroupStruct, length: tg.length, nullCount: 0,
          children: [
            makeData({ type: new Uint32(), length: tg.length, nullCount: 0, data: Uint32Array.from(tg, (g) => g.t_start) }),
            makeData({ type: new Uint32(), length: tg.length, nullCount: 0, data: Uint32Array.from(tg, (g) => g.t_end) }),
            makeData({ type: new Float32(), length: tg.length, nullCount: 0, data: Float32Array.from(tg, (g) => g.scale) }),
            makeData({ type: new Float32(), length: tg.length, nullCount: 0, data: Float32Array.from(tg, (g) => g.zero_point) }),
          ],
        });
  const eq = r.equalization_scales;
  const children: Data[] = [
    utf8(r.layer_name),
    scalar(new Uint32(), Uint32Array.of(r.layer_index)),
    list(field('shape'), makeData({ type: new Int64(), length: r.shape.length, nullCount: 0, data: BigInt64Array.from(r.shape, BigInt) }), r.shape.length),
    utf8(r.source_dtype),
    utf8(r.quant_type),
    scalar(new Uint8(), Uint8Array.of(r.bit_width)),
    utf8(r.method),
    scalar(new Uint32(), Uint32Array.of(r.group_size)),
    makeData({ type: new LargeBinary(), length: 1, nullCount: 0, valueOffsets: BigInt64Array.of(0n, BigInt(r.data.byteLength)), data: r.data }),
    list(field('scales'), makeData({ type: new Float16(), length: r.scales.length, nullCount: 0, data: r.scales }), r.scales.length),
    list(field('zero_points'), makeData({ type: new Float16(), length: r.zero_points.length, nullCount: 0, data: r.zero_points }), r.zero_points.length),
    list(field('equalization_scales'), eq === null ? null : makeData({ type: new Float32(), length: eq.length, nullCount: 0, data: eq }), eq?.length ?? 0),
    scalar(new Uint8(), Uint8Array.of(r.act_bit_width ?? 0), r.act_bit_width === null),
    list(field('time_group_params'), tgChild, tg?.length ?? 0),
    scalar(new Float32(), Float32Array.of(r.sqnr_db)),
    scalar(new Float32(), Float32Array.of(r.cosine)),
    scalar(new Uint8(), Uint8Array.of(r.planned_bit_width)),
    utf8(r.notes),
    utf8(r.data_sha256),
  ];
  return new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: 1, nullCount: 0, children }));
}

/** The row of a one-row batch (or row `i`), as plain values; buffers are views, not copies. */
export function batchToRecord(batch: RecordBatch, i = 0): LayerRecord {
  const col = (name: string) => batch.getChild(name)!;
  const list16 = (name: string) => (col(name).get(i) as { toArray(): Uint16Array }).toArray();
  const eq = col('equalization_scales').get(i) as { toArray(): Float32Array } | null;
  const tg = col('time_group_params').get(i) as { toArray(): { t_start: number; t_end: number; scale: number; zero_point: number }[] } | null;
  const act = col('act_bit_width').get(i) as number | null;
  return {
    layer_name: col('layer_name').get(i) as string,
    layer_index: col('layer_index').get(i) as number,
    shape: Array.from((col('shape').get(i) as { toArray(): BigInt64Array }).toArray(), Number),
    source_dtype: col('source_dtype').get(i) as SourceDtype,
    quant_type: col('quant_type').get(i) as QuantType,
    bit_width: col('bit_width').get(i) as number,
    method: col('method').get(i) as OutputMethod,
    group_size: col('group_size').get(i) as number,
    data: col('data').get(i) as Uint8Array,
    scales: list16('scales'),
    zero_points: list16('zero_points'),
    equalization_scales: eq === null ? null : eq.toArray(),
    act_bit_width: act,
    time_group_params: tg === null ? null : Array.from(tg.toArray(), (g) => ({ t_start: g.t_start, t_end: g.t_end, scale: g.scale, zero_point: g.zero_point })),
    sqnr_db: col('sqnr_db').get(i) as number,
    cosine: col('cosine').get(i) as number,
    planned_bit_width: col('planned_bit_width').get(i) as number,
    notes: col('notes').get(i) as string | null,
    data_sha256: col('data_sha256').get(i) as string,
  };
}

/** format.md's bytes_out of a row: data + 2 per scale and per zero point + 4 per equalization scale + 16 per time group. */
export function recordBytesOut(r: Pick<LayerRecord, 'data' | 'scales' | 'zero_points' | 'equalization_scales' | 'time_group_params'>): number {
  return r.data.byteLength + 2 * (r.scales.length + r.zero_points.length) + 4 * (r.equalization_scales?.length ?? 0) + 16 * (r.time_group_params?.length ?? 0);
}

export function quantTypeForBits(bits: 2 | 4 | 8, doubleQuant = false): QuantType {
  return `int${bits}${doubleQuant ? '_dq' : ''}` as QuantType;
}

/** A format v2 layer: data = codes then integer group params; scales / zero_points = the super-group factors d / m. */
export function isDoubleQuant(r: Pick<LayerRecord, 'quant_type'>): boolean {
  return r.quant_type.endsWith('_dq');
}
