// Calibration statistics (interfaces.md): JSON Lines, or an Arrow IPC file with the same columns.
//   {"layer": "<tensor>", "timestep": 999, "min": -3.1, "max": 4.2}     time-aware
//   {"layer": "<tensor>", "channel_absmax": [0.8, 1.9, …]}              spatial
// And what the two methods derive from them: activation parameters per timestep group, and
// SmoothQuant equalization scales.

import { readFileSync } from 'node:fs';
import { tableFromIPC } from 'apache-arrow';
import { z } from 'zod';
import { CalibrationError } from '../errors.js';
import { rne } from './reference.js';

export interface LayerCalibration {
  /** timestep → input activation range (several records for one timestep are merged) */
  timesteps: Map<number, { min: number; max: number }>;
  /** max |x_j| per input channel (several records are merged by element-wise max) */
  channelAbsmax: Float32Array | null;
}

export type Calibration = Map<string, LayerCalibration>;

const finite = z.number().finite();
const timestepRecord = z.object({ layer: z.string().min(1), timestep: z.number().int().min(0), min: finite, max: finite }).strict();
const channelRecord = z.object({ layer: z.string().min(1), channel_absmax: z.array(finite.min(0)).min(1) }).strict();

export function loadCalibration(path: string): Calibration {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    throw new CalibrationError(`cannot read calibration file ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, path);
  }
  const isArrow = bytes.subarray(0, 6).toString('latin1') === 'ARROW1' || bytes.readUInt32LE(0) === 0xffffffff;
  const records = isArrow ? arrowRecords(bytes, path) : jsonlRecords(bytes.toString('utf8'), path);
  const cal: Calibration = new Map();
  for (const { rec, line } of records) addRecord(cal, rec, path, line);
  return cal;
}

function* jsonlRecords(text: string, path: string): Generator<{ rec: unknown; line: number }> {
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!.trim();
    if (l === '') continue;
    try {
      yield { rec: JSON.parse(l), line: i + 1 };
    } catch (e) {
      throw new CalibrationError(`${path}:${i + 1}: not valid JSON (${(e as Error).message})`, path, i + 1);
    }
  }
}

function* arrowRecords(bytes: Buffer, path: string): Generator<{ rec: unknown; line: number }> {
  let table;
  try {
    table = tableFromIPC(bytes);
  } catch (e) {
    throw new CalibrationError(`${path}: not a readable Arrow IPC file (${(e as Error).message})`, path);
  }
  const col = (n: string) => table.getChild(n);
  const layer = col('layer');
  if (!layer) throw new CalibrationError(`${path}: Arrow calibration needs a "layer" column`, path);
  const [ts, mn, mx, ch] = [col('timestep'), col('min'), col('max'), col('channel_absmax')];
  for (let i = 0; i < table.numRows; i++) {
    const rec: Record<string, unknown> = { layer: layer.get(i) };
    const t = ts?.get(i);
    if (t !== null && t !== undefined) Object.assign(rec, { timestep: Number(t), min: mn?.get(i), max: mx?.get(i) });
    const c = ch?.get(i);
    if (c !== null && c !== undefined) rec['channel_absmax'] = Array.from(c.toArray() as Float32Array, Number);
    yield { rec, line: i + 1 };
  }
}

function addRecord(cal: Calibration, rec: unknown, path: string, line: number): void {
  const where = `${path}:${line}`;
  const isChannel = typeof rec === 'object' && rec !== null && 'channel_absmax' in rec;
  const parsed = (isChannel ? channelRecord : timestepRecord).safeParse(rec);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const field = issue.code === 'unrecognized_keys' ? issue.keys.join(', ') : issue.path.join('.') || 'record';
    const expected = isChannel
      ? '{"layer": string, "channel_absmax": [non-negative numbers]}'
      : '{"layer": string, "timestep": integer ≥ 0, "min": number, "max": number}';
    throw new CalibrationError(`${where}: ${issue.code === 'unrecognized_keys' ? 'unknown field' : 'bad field'} "${field}"; expected ${expected}`, path, line);
  }
  const layerName = parsed.data.layer;
  let entry = cal.get(layerName);
  if (!entry) cal.set(layerName, (entry = { timesteps: new Map(), channelAbsmax: null }));
  if ('channel_absmax' in parsed.data) {
    const values = Float32Array.from(parsed.data.channel_absmax);
    if (entry.channelAbsmax && entry.channelAbsmax.length !== values.length) {
      throw new CalibrationError(`${where}: layer "${layerName}" has channel_absmax of length ${values.length} but an earlier record has ${entry.channelAbsmax.length}`, path, line);
    }
    entry.channelAbsmax = entry.channelAbsmax ? entry.channelAbsmax.map((v, j) => Math.max(v, values[j]!)) : values;
  } else {
    const { timestep, min, max } = parsed.data;
    if (min > max) throw new CalibrationError(`${where}: min ${min} is greater than max ${max}`, path, line);
    const prev = entry.timesteps.get(timestep);
    entry.timesteps.set(timestep, prev ? { min: Math.min(prev.min, min), max: Math.max(prev.max, max) } : { min, max });
  }
}

export interface TimeGroupParam {
  t_start: number;
  /** inclusive */
  t_end: number;
  scale: number;
  zero_point: number;
}

/**
 * The timesteps present, sorted and cut into `numGroups` contiguous groups (as even as possible;
 * fewer when there are fewer timesteps). Per group: scale = (max − min) / (2^a − 1) and
 * zero_point = rne(−min / scale), both float32; a zero range uses scale 1.
 */
export function timeGroupParams(cal: LayerCalibration, numGroups: number, actBits: number): TimeGroupParam[] {
  const steps = [...cal.timesteps.keys()].sort((a, b) => a - b);
  const groups = Math.min(numGroups, steps.length);
  const out: TimeGroupParam[] = [];
  for (let g = 0; g < groups; g++) {
    const part = steps.slice(Math.floor((g * steps.length) / groups), Math.floor(((g + 1) * steps.length) / groups));
    let min = Infinity;
    let max = -Infinity;
    for (const t of part) {
      const r = cal.timesteps.get(t)!;
      min = Math.min(min, r.min);
      max = Math.max(max, r.max);
    }
    let scale = Math.fround((max - min) / (2 ** actBits - 1));
    if (scale === 0) scale = 1;
    out.push({ t_start: part[0]!, t_end: part[part.length - 1]!, scale, zero_point: Math.fround(rne(Math.fround(-min / scale))) });
  }
  return out;
}

/** s_j = clamp(absmax_x_j^α / absmax_w_j^(1−α), 1e-5, 1e5) as float32; a column with no signal at all gets 1. */
export function equalizationScales(channelAbsmax: Float32Array, weightAbsmax: Float32Array, alpha: number): Float32Array {
  const s = new Float32Array(channelAbsmax.length);
  for (let j = 0; j < s.length; j++) {
    const v = channelAbsmax[j]! ** alpha / weightAbsmax[j]! ** (1 - alpha);
    s[j] = Number.isNaN(v) ? 1 : Math.min(1e5, Math.max(1e-5, v));
  }
  return s;
}
