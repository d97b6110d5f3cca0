// safetensors headers, read and validated strictly. Scanning reads only the 8-byte length and
// the JSON header; tensor data is read later, each tensor (or row range) as its own byte range.
//
// Layout: u64 little-endian N, N bytes of UTF-8 JSON {name: {dtype, shape, data_offsets}, …,
// "__metadata__"?: {string: string}}, then the data buffer. Offsets are relative to the data
// buffer, which every tensor must cover exactly: no overlap, no gap, nothing past the end.

import { closeSync, readSync, fstatSync } from 'node:fs';
import { openRegularFileSync } from './open-regular.js';
import { basename } from 'node:path';
import { ModelFormatError } from '../errors.js';
import { SOURCE_DTYPES, dtypeSize, type SourceDtype } from '../quant/dtype.js';

export const MAX_HEADER_BYTES = 100_000_000;
/** A header nests at most {entry: {shape: [..]}}: deeper JSON is not safetensors (and is not parsed). */
const MAX_HEADER_NESTING = 3;

const KNOWN_SAFETENSORS_DTYPES = new Set([
  'BOOL', 'U8', 'I8', 'F8_E5M2', 'F8_E4M3', 'I16', 'U16', 'F16', 'BF16', 'I32', 'U32', 'F32', 'F64', 'I64', 'U64',
]);

export interface TensorInfo {
  name: string;
  dtype: SourceDtype;
  shape: number[];
  /** path of the file holding it */
  file: string;
  /** absolute offset of its first byte in that file */
  dataStart: number;
  byteLength: number;
}

export interface SafetensorsHeader {
  file: string;
  fileSize: number;
  headerLength: number;
  /** the raw JSON header bytes, as in the file */
  headerBytes: Uint8Array;
  metadata: Record<string, string>;
  /** in header order */
  tensors: TensorInfo[];
}

/** Read and validate the header of one .safetensors file (reads only the header bytes). */
export function readSafetensorsHeader(file: string): SafetensorsHeader {
  const fd = openRegularFileSync(file);
  try {
    const fileSize = fstatSync(fd).size;
    // the 9th byte too: a header starts with '{', which tells a non-safetensors file from a truncated one
    const prefix = Buffer.alloc(Math.min(9, fileSize));
    readSync(fd, prefix, 0, prefix.length, 0);
    const n = headerLengthOf(prefix, fileSize, file);
    const bytes = Buffer.alloc(8 + n);
    prefix.copy(bytes, 0, 0, Math.min(prefix.length, bytes.length));
    const got = readSync(fd, bytes, 8, n, 8);
    if (got !== n) throw new ModelFormatError(`${basename(file)}: header is truncated (read ${got} of ${n} bytes)`, file);
    return parseSafetensorsHeader(bytes, fileSize, file);
  } finally {
    closeSync(fd);
  }
}

function headerLengthOf(prefix: Uint8Array, fileSize: number, file: string): number {
  const name = basename(file);
  if (fileSize < 8) {
    throw new ModelFormatError(`${name}: file is ${fileSize} bytes; a safetensors file starts with an 8-byte header length`, file);
  }
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  const absurd = n > BigInt(MAX_HEADER_BYTES) || n + 8n > BigInt(fileSize);
  if (absurd && prefix.length > 8 && prefix[8] !== 0x7b) {
    const start = Buffer.from(prefix.subarray(0, 9)).toString('latin1').replace(/[^\x20-\x7e]/g, '.');
    throw new ModelFormatError(`not a safetensors file: ${name} (it starts with "${start}", not an 8-byte header length and a JSON header)`, file);
  }
  if (n > BigInt(MAX_HEADER_BYTES)) {
    throw new ModelFormatError(`${name}: header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`, file);
  }
  if (n + 8n > BigInt(fileSize)) {
    throw new ModelFormatError(`${name}: header length ${n} goes beyond the end of the file (${fileSize} bytes)`, file);
  }
  return Number(n);
}

/**
 * Validate `bytes` (at least the 8-byte length and the whole header) of a file of `fileSize`
 * bytes. Pure: the fuzz test drives it with mutated headers. Throws only ModelFormatError.
 */
export function parseSafetensorsHeader(bytes: Uint8Array, fileSize: number, file: string): SafetensorsHeader {
  const name = basename(file);
  const fail = (msg: string, tensor?: string): never => {
    throw new ModelFormatError(`${name}: ${tensor !== undefined ? `tensor "${tensor}": ` : ''}${msg}`, file, tensor);
  };
  const n = headerLengthOf(bytes, fileSize, file);
  if (bytes.length < 8 + n) fail(`header is truncated (have ${bytes.length - 8} of ${n} bytes)`);
  const headerBytes = bytes.subarray(8, 8 + n);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    return fail('header is not valid UTF-8');
  }
  const depth = nestingDepth(text);
  if (depth > MAX_HEADER_NESTING) fail(`header nests JSON ${depth} levels deep; a safetensors header has at most ${MAX_HEADER_NESTING}`);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return fail(`header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) fail('header is not a JSON object');
  const obj = json as Record<string, unknown>;
  const order = topLevelKeys(text);
  const seen = new Set<string>();
  for (const key of order) {
    if (seen.has(key)) fail(`appears twice in the header`, key);
    seen.add(key);
  }

  let metadata: Record<string, string> = {};
  if ('__metadata__' in obj) {
    const m = obj['__metadata__'];
    if (typeof m !== 'object' || m === null || Array.isArray(m)) fail('"__metadata__" must be an object of strings');
    for (const [k, v] of Object.entries(m as object)) {
      if (typeof v !== 'string') fail(`"__metadata__"."${k}" must be a string, got ${brief(v)}`);
    }
    metadata = m as Record<string, string>;
  }

  const dataStart = 8 + n;
  const dataLength = fileSize - dataStart;
  const tensors: TensorInfo[] = [];
  const ranges: { begin: number; end: number; name: string }[] = [];
  for (const tname of order) {
    if (tname === '__metadata__') continue;
    const entry = obj[tname];
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) fail('entry is not an object', tname);
    const e = entry as Record<string, unknown>;
    for (const field of ['dtype', 'shape', 'data_offsets']) {
      if (!(field in e)) fail(`missing field "${field}"`, tname);
    }
    if (typeof e['dtype'] !== 'string') fail(`"dtype" must be a string, got ${brief(e['dtype'])}`, tname);
    const dtype = e['dtype'] as string;
    if (!(SOURCE_DTYPES as readonly string[]).includes(dtype)) {
      const what = KNOWN_SAFETENSORS_DTYPES.has(dtype) ? 'unsupported dtype' : 'unknown dtype';
      fail(`${what} ${JSON.stringify(dtype)}; ArrowQuant reads ${SOURCE_DTYPES.join(', ')}`, tname);
    }
    const shape = e['shape'];
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      fail(`"shape" must be a list of non-negative integers, got ${brief(shape)}`, tname);
    }
    const dims = shape as number[];
    // An empty tensor has nothing to quantize, yet its [R, C] view sizes per-row structures:
    // [2^53−1, 0] would ask for an impossible allocation. Refused by name, before anything is sized.
    if (dims.includes(0)) fail(`shape ${JSON.stringify(dims)} has no elements; ArrowQuant does not take empty tensors`, tname);
    const offs = e['data_offsets'];
    if (
      !Array.isArray(offs) ||
      offs.length !== 2 ||
      !offs.every((d) => Number.isSafeInteger(d) && d >= 0) ||
      (offs[0] as number) > (offs[1] as number)
    ) {
      fail(`"data_offsets" must be [begin, end] with 0 ≤ begin ≤ end, got ${brief(offs)}`, tname);
    }
    const [begin, end] = offs as [number, number];
    const elements = (shape as number[]).reduce((a, b) => a * b, 1);
    const expected = elements * dtypeSize(dtype as SourceDtype);
    if (!Number.isSafeInteger(expected) || expected !== end - begin) {
      fail(`shape ${JSON.stringify(shape)} × ${dtype} is ${expected} bytes but data_offsets [${begin}, ${end}] span ${end - begin}`, tname);
    }
    if (end > dataLength) {
      fail(`data_offsets [${begin}, ${end}] go past the end of the data (${dataLength} bytes after the header)`, tname);
    }
    ranges.push({ begin, end, name: tname });
    tensors.push({ name: tname, dtype: dtype as SourceDtype, shape: shape as number[], file, dataStart: dataStart + begin, byteLength: end - begin });
  }

  // The data buffer must be covered exactly once.
  ranges.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  let prev = '';
  for (const r of ranges) {
    if (r.begin < cursor) fail(`data_offsets [${r.begin}, ${r.end}] overlap tensor "${prev}"`, r.name);
    if (r.begin > cursor) fail(`data_offsets [${r.begin}, ${r.end}] leave a gap: bytes [${cursor}, ${r.begin}) belong to no tensor`, r.name);
    cursor = r.end;
    prev = r.name;
  }
  if (cursor !== dataLength) {
    fail(`data buffer leaves a gap: bytes [${cursor}, ${dataLength}) after the last tensor belong to no tensor`);
  }
  return { file, fileSize, headerLength: n, headerBytes: Uint8Array.from(headerBytes), metadata, tensors };
}

/** A JSON value for an error message, never deep or long (JSON.stringify of hostile input can overflow). */
function brief(v: unknown): string {
  const flat = v === null || typeof v !== 'object' || (Array.isArray(v) && v.length <= 8 && v.every((x) => x === null || typeof x !== 'object'));
  if (!flat) return Array.isArray(v) ? `a list of ${v.length} items` : 'an object';
  const t = JSON.stringify(v) ?? String(v);
  return t.length > 80 ? `${t.slice(0, 77)}...` : t;
}

/** Deepest nesting of {} and [] in JSON text (strings skipped); bounded by the text, no recursion. */
function nestingDepth(text: string): number {
  let depth = 0;
  let max = 0;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      i = j;
    } else if (ch === '{' || ch === '[') {
      max = Math.max(max, ++depth);
    } else if (ch === '}' || ch === ']') {
      depth--;
    }
  }
  return max;
}

/**
 * Keys of the top-level JSON object in document order, duplicates included. JSON.parse cannot
 * give this: it reorders integer-like keys and silently keeps the last of two equal keys.
 * `text` must already be valid JSON.
 */
function topLevelKeys(text: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) {
        keys.push(JSON.parse(text.slice(i, j + 1)) as string);
        expectKey = false;
      }
      i = j;
    } else if (ch === '{' || ch === '[') {
      depth++;
      if (depth === 1 && ch === '{') expectKey = true;
    } else if (ch === '}' || ch === ']') {
      depth--;
    } else if (ch === ',' && depth === 1) {
      expectKey = true;
    }
  }
  return keys;
}
