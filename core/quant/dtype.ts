// Source dtypes, their decoding to float32 and encoding from it. All safetensors data is little-endian.

import { F16_TABLE, f32ToBf16Bits, f32ToF16Bits } from './float16.js';

export type SourceDtype = 'F32' | 'F16' | 'BF16';
export const SOURCE_DTYPES: readonly SourceDtype[] = ['F32', 'F16', 'BF16'];

export function dtypeSize(dtype: SourceDtype): number {
  return dtype === 'F32' ? 4 : 2;
}

/** Decode little-endian `bytes` of `dtype` into float32 values (exact for every dtype). */
export function decodeToF32(bytes: Uint8Array, dtype: SourceDtype, out?: Float32Array): Float32Array {
  const n = bytes.byteLength / dtypeSize(dtype);
  const dst = out && out.length >= n ? out.subarray(0, n) : new Float32Array(n);
  if (dtype === 'F32') {
    new Uint8Array(dst.buffer, dst.byteOffset, n * 4).set(bytes.subarray(0, n * 4));
    return dst;
  }
  const u16 = asU16(bytes, n);
  if (dtype === 'F16') {
    for (let i = 0; i < n; i++) dst[i] = F16_TABLE[u16[i]!]!;
  } else {
    const bits = new Uint32Array(dst.buffer, dst.byteOffset, n);
    for (let i = 0; i < n; i++) bits[i] = u16[i]! << 16;
  }
  return dst;
}

/**
 * Encode float32 values as little-endian `dtype` bytes, rounding half to even (NaN stays NaN):
 * the inverse of decodeToF32 for values the dtype holds exactly.
 */
export function encodeFromF32(values: Float32Array, dtype: SourceDtype): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
  const out = new Uint16Array(values.length);
  if (dtype === 'BF16') {
    const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
    for (let i = 0; i < values.length; i++) {
      const x = bits[i]!;
      out[i] = (x & 0x7fffffff) > 0x7f800000 ? f32ToBf16Bits(values[i]!) : (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
    }
  } else {
    for (let i = 0; i < values.length; i++) out[i] = f32ToF16Bits(values[i]!);
  }
  return new Uint8Array(out.buffer);
}

function asU16(bytes: Uint8Array, n: number): Uint16Array {
  if (bytes.byteOffset % 2 === 0) return new Uint16Array(bytes.buffer, bytes.byteOffset, n);
  return new Uint16Array(bytes.slice(0, n * 2).buffer);
}
