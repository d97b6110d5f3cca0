// Llama-shaped models with Hugging Face tensor names and heavy-tailed, trained-looking values:
// the README's sample model, test fixtures and the 2 GB benchmark model.

import { encodeFromF32, type SourceDtype } from '../quant/dtype.js';
import { fillHeavyTailed, seededRandom } from './random.js';
import type { TensorToWrite } from './safetensors-writer.js';

export interface LlamaShape {
  hidden: number;
  intermediate: number;
  layers: number;
  vocab: number;
  heads: number;
  kvHeads: number;
}

export const SAMPLE_LLAMA: LlamaShape = { hidden: 256, intermediate: 688, layers: 4, vocab: 1024, heads: 8, kvHeads: 4 };

/** Tensor names and shapes in the order Hugging Face Llama checkpoints use. */
export function llamaTensorShapes(s: LlamaShape): { name: string; shape: number[] }[] {
  const kv = (s.hidden / s.heads) * s.kvHeads;
  const out = [{ name: 'model.embed_tokens.weight', shape: [s.vocab, s.hidden] }];
  for (let i = 0; i < s.layers; i++) {
    const p = `model.layers.${i}`;
    out.push(
      { name: `${p}.input_layernorm.weight`, shape: [s.hidden] },
      { name: `${p}.self_attn.q_proj.weight`, shape: [s.hidden, s.hidden] },
      { name: `${p}.self_attn.k_proj.weight`, shape: [kv, s.hidden] },
      { name: `${p}.self_attn.v_proj.weight`, shape: [kv, s.hidden] },
      { name: `${p}.self_attn.o_proj.weight`, shape: [s.hidden, s.hidden] },
      { name: `${p}.post_attention_layernorm.weight`, shape: [s.hidden] },
      { name: `${p}.mlp.gate_proj.weight`, shape: [s.intermediate, s.hidden] },
      { name: `${p}.mlp.down_proj.weight`, shape: [s.hidden, s.intermediate] },
      { name: `${p}.mlp.up_proj.weight`, shape: [s.intermediate, s.hidden] },
    );
  }
  out.push({ name: 'model.norm.weight', shape: [s.hidden] }, { name: 'lm_head.weight', shape: [s.vocab, s.hidden] });
  return out;
}

const POOL_SIZE = 1 << 20;
const CHUNK_ELEMENTS = 1 << 20;

/**
 * Values for one tensor, in chunks of encoded bytes. Norm weights sit around 1; others are
 * Student-t (5 degrees of freedom, std ≈ 1/√fan_in) with per-row spread and rare outlier
 * columns. Large tensors draw rows from a shared pool at random offsets, so that generating a
 * 2 GB model takes seconds, not minutes.
 */
export function* syntheticTensorBytes(name: string, shape: number[], dtype: SourceDtype, seed: number): Generator<Uint8Array> {
  const rand = seededRandom(seed);
  const cols = shape.length > 1 ? shape.slice(1).reduce((a, b) => a * b, 1) : (shape[0] ?? 1);
  const total = shape.reduce((a, b) => a * b, 1);
  const isNorm = name.includes('norm');
  const std = 1 / Math.sqrt(Math.max(cols, 1));
  const pool = fillHeavyTailed(new Float32Array(Math.min(POOL_SIZE, Math.max(total, 1))), rand, std, 5);
  const outlierCols = new Set(Array.from({ length: Math.max(1, Math.floor(cols / 512)) }, () => Math.floor(rand() * cols)));
  const values = new Float32Array(Math.min(CHUNK_ELEMENTS, Math.max(total, 1)));
  for (let start = 0; start < total; start += values.length) {
    const n = Math.min(values.length, total - start);
    const v = values.subarray(0, n);
    if (isNorm) {
      for (let i = 0; i < n; i++) v[i] = 1 + pool[(start + i) % pool.length]! * Math.sqrt(cols) * 0.1;
    } else {
      for (let i = 0; i < n; ) {
        const rowLen = Math.min(cols - ((start + i) % cols), n - i);
        const off = Math.floor(rand() * (pool.length - Math.min(rowLen, pool.length)));
        const spread = 0.6 + 0.8 * rand();
        for (let k = 0; k < rowLen; k++) v[i + k] = pool[(off + k) % pool.length]! * spread;
        i += rowLen;
      }
      for (const c of outlierCols) for (let i = (c - (start % cols) + cols) % cols; i < n; i += cols) v[i] = v[i]! * 8;
    }
    yield encodeFromF32(v, dtype);
  }
}

export function syntheticLlamaTensors(shape: LlamaShape, dtype: SourceDtype, seed = 1): TensorToWrite[] {
  return llamaTensorShapes(shape).map((t, i) => ({
    ...t,
    dtype,
    data: () => syntheticTensorBytes(t.name, t.shape, dtype, seed * 7919 + i),
  }));
}
