// Writing safetensors: the sample and synthetic models, and `dequantize`. Tensors are streamed
// (a tensor's bytes may come in chunks), the header is padded with spaces to 8 bytes as
// safetensors does, and the file appears under its name only when complete.

import { mkdirSync, writeFileSync } from 'node:fs';
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { OutputError, outputErrorFrom } from '../errors.js';
import { dtypeSize, type SourceDtype } from '../quant/dtype.js';
import { INDEX_FILE } from './model-source.js';

export interface TensorToWrite {
  name: string;
  dtype: SourceDtype;
  shape: number[];
  /** the tensor's little-endian bytes, whole or in consecutive chunks */
  data: Uint8Array | (() => Iterable<Uint8Array> | AsyncIterable<Uint8Array>);
}

export function tensorByteLength(t: Pick<TensorToWrite, 'dtype' | 'shape'>): number {
  return t.shape.reduce((a, b) => a * b, 1) * dtypeSize(t.dtype);
}

export function safetensorsHeader(tensors: readonly Pick<TensorToWrite, 'name' | 'dtype' | 'shape'>[], metadata?: Record<string, string>): Buffer {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) header['__metadata__'] = metadata;
  let offset = 0;
  for (const t of tensors) {
    const n = tensorByteLength(t);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + n] };
    offset += n;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const body = Buffer.from(json, 'utf8');
  const out = Buffer.alloc(8 + body.length);
  out.writeBigUInt64LE(BigInt(body.length), 0);
  body.copy(out, 8);
  return out;
}

/** Write one .safetensors file atomically (temporary name, then rename). */
export async function writeSafetensors(path: string, tensors: readonly TensorToWrite[], metadata?: Record<string, string>): Promise<void> {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  let fh: FileHandle | null = null;
  try {
    fh = await open(tmp, 'w');
    let pos = 0;
    const put = async (c: Uint8Array) => {
      let off = 0;
      while (off < c.byteLength) off += (await fh!.write(c, off, c.byteLength - off, pos + off)).bytesWritten;
      pos += c.byteLength;
    };
    await put(safetensorsHeader(tensors, metadata));
    for (const t of tensors) {
      let written = 0;
      const chunks = typeof t.data === 'function' ? t.data() : [t.data];
      for await (const c of chunks) {
        await put(c);
        written += c.byteLength;
      }
      if (written !== tensorByteLength(t)) {
        throw new OutputError(`tensor "${t.name}": wrote ${written} bytes, its shape and dtype need ${tensorByteLength(t)}`, path);
      }
    }
    await fh.sync();
    await fh.close();
    fh = null;
    await rename(tmp, path);
  } catch (e) {
    if (fh) await fh.close().catch(() => undefined);
    await rm(tmp, { force: true });
    throw outputErrorFrom(path, e);
  }
}

/** A sharded model directory: model-0000i-of-0000n.safetensors and model.safetensors.index.json. */
export async function writeShardedSafetensors(dir: string, tensors: readonly TensorToWrite[], shards: number, metadata?: Record<string, string>): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const total = tensors.reduce((s, t) => s + tensorByteLength(t), 0);
  const per = Math.ceil(total / shards);
  const groups: TensorToWrite[][] = Array.from({ length: shards }, () => []);
  let acc = 0;
  for (const t of tensors) {
    const i = Math.min(shards - 1, Math.floor(acc / per));
    groups[i]!.push(t);
    acc += tensorByteLength(t);
  }
  const nonEmpty = groups.filter((g) => g.length > 0);
  const pad = (n: number) => String(n).padStart(5, '0');
  const weightMap: Record<string, string> = {};
  for (const [i, g] of nonEmpty.entries()) {
    const file = `model-${pad(i + 1)}-of-${pad(nonEmpty.length)}.safetensors`;
    await writeSafetensors(join(dir, file), g, metadata);
    for (const t of g) weightMap[t.name] = file;
  }
  writeFileSync(join(dir, INDEX_FILE), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 1));
}
