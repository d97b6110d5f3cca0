// A model: one .safetensors file, or a directory of shards (with model.safetensors.index.json,
// or else every .safetensors file in it). Tensors come in canonical order: shard order (file
// names sorted), then header order. Opening reads headers only.

import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { ModelFormatError } from '../errors.js';
import { readSafetensorsHeader, type SafetensorsHeader, type TensorInfo } from './safetensors-reader.js';

export const INDEX_FILE = 'model.safetensors.index.json';

export interface ModelTensor extends TensorInfo {
  /** position in canonical order */
  index: number;
}

export interface ModelSource {
  /** the file name without .safetensors, or the directory name */
  name: string;
  path: string;
  shards: SafetensorsHeader[];
  tensors: ModelTensor[];
  /** __metadata__ of the first shard */
  metadata: Record<string, string>;
  /** sum of the shard file sizes */
  totalBytes: number;
  /** SHA-256 (hex) of the concatenated JSON headers, in shard order */
  headersSha256: string;
}

export function openModel(path: string): ModelSource {
  const abs = resolve(path);
  if (!existsSync(abs)) throw new ModelFormatError(`model not found: ${path}`, abs);
  const st = statSync(abs);
  let files: string[];
  let weightMap: Map<string, string> | null = null;
  if (st.isDirectory()) {
    const indexPath = join(abs, INDEX_FILE);
    if (existsSync(indexPath)) {
      weightMap = readIndex(indexPath);
      files = [...new Set(weightMap.values())].sort();
      for (const f of files) {
        if (!existsSync(join(abs, f))) {
          const tensor = [...weightMap].find(([, file]) => file === f)![0];
          throw new ModelFormatError(`${INDEX_FILE}: names shard "${f}" (for tensor "${tensor}") which does not exist in ${path}`, indexPath, tensor);
        }
      }
    } else {
      files = readdirSync(abs).filter((f) => f.endsWith('.safetensors')).sort();
      if (files.length === 0) throw new ModelFormatError(`no .safetensors files in directory ${path}`, abs);
    }
    files = files.map((f) => join(abs, f));
  } else {
    files = [abs];
  }

  const shards = files.map((f) => readSafetensorsHeader(f));
  const tensors: ModelTensor[] = [];
  const owner = new Map<string, string>();
  for (const shard of shards) {
    for (const t of shard.tensors) {
      const other = owner.get(t.name);
      if (other !== undefined) {
        throw new ModelFormatError(`tensor "${t.name}" appears in both ${basename(other)} and ${basename(shard.file)}`, shard.file, t.name);
      }
      owner.set(t.name, shard.file);
      if (weightMap) {
        const listed = weightMap.get(t.name);
        if (listed === undefined) {
          throw new ModelFormatError(`${basename(shard.file)}: tensor "${t.name}" is not listed in ${INDEX_FILE}`, shard.file, t.name);
        }
        if (join(abs, listed) !== shard.file) {
          throw new ModelFormatError(`${INDEX_FILE} puts tensor "${t.name}" in ${listed} but it is in ${basename(shard.file)}`, shard.file, t.name);
        }
      }
      tensors.push({ ...t, index: tensors.length });
    }
  }
  if (weightMap) {
    for (const [tname, f] of weightMap) {
      if (!owner.has(tname)) {
        throw new ModelFormatError(`${INDEX_FILE} lists tensor "${tname}" in ${f} but that shard has no such tensor`, join(abs, f), tname);
      }
    }
  }
  if (tensors.length === 0) {
    const why = weightMap ? `${INDEX_FILE} has an empty weight_map` : shards.length === 1 ? 'its header lists no tensor' : 'no shard header lists a tensor';
    throw new ModelFormatError(`${path}: no tensors (${why}); there is nothing to quantize`, abs);
  }
  const hash = createHash('sha256');
  for (const s of shards) hash.update(s.headerBytes);
  return {
    name: st.isDirectory() ? basename(abs) : basename(abs).replace(/\.safetensors$/, ''),
    path: abs,
    shards,
    tensors,
    metadata: shards[0]?.metadata ?? {},
    totalBytes: shards.reduce((a, s) => a + s.fileSize, 0),
    headersSha256: hash.digest('hex'),
  };
}

function readIndex(indexPath: string): Map<string, string> {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(indexPath, 'utf8'));
  } catch (e) {
    throw new ModelFormatError(`${INDEX_FILE} is not valid JSON (${(e as Error).message})`, indexPath);
  }
  const wm = (json as { weight_map?: unknown } | null)?.weight_map;
  if (typeof wm !== 'object' || wm === null || Array.isArray(wm)) {
    throw new ModelFormatError(`${INDEX_FILE} has no "weight_map" object`, indexPath);
  }
  const map = new Map<string, string>();
  for (const [k, v] of Object.entries(wm)) {
    if (typeof v !== 'string' || v.includes('/') || v.includes('\\') || v === '..' || !v.endsWith('.safetensors')) {
      throw new ModelFormatError(`${INDEX_FILE}: weight_map["${k}"] must be a .safetensors file name in the same directory, got ${JSON.stringify(v)}`, indexPath, k);
    }
    map.set(k, v);
  }
  return map;
}

/** [R, C] view of format.md: R = shape[0], C = product of the rest; 1-D is [1, C]; 0-D is [1, 1]. */
export function matrixView(shape: readonly number[]): { rows: number; cols: number } {
  if (shape.length === 0) return { rows: 1, cols: 1 };
  if (shape.length === 1) return { rows: 1, cols: shape[0]! };
  return { rows: shape[0]!, cols: shape.slice(1).reduce((a, b) => a * b, 1) };
}

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
