// Modality of a model, as the seed detects it: an explicit "modality" in the safetensors
// metadata, else hints in its "architecture", else scores of tensor-name patterns (text wins ties).

export type Modality = 'text' | 'code' | 'image' | 'audio';

const TEXT = ['embed_tokens', 'lm_head', 'self_attn', 'mlp.gate', 'mlp.up', 'mlp.down', 'input_layernorm',
  'post_attention_layernorm', 'rotary_emb', 'wte', 'wpe', 'transformer.h.', 'model.layers.'];
const IMAGE = ['conv_in', 'conv_out', 'down_blocks', 'up_blocks', 'mid_block', 'unet', 'vae.', 'patch_embed', 'to_rgb'];
const AUDIO = ['mel', 'spectrogram', 'waveform', 'audio_encoder', 'vocoder'];
const MODALITIES: readonly Modality[] = ['text', 'code', 'image', 'audio'];

export function detectModality(metadata: Record<string, string>, names: readonly string[]): Modality | null {
  const explicit = metadata['modality']?.toLowerCase();
  if (explicit && (MODALITIES as readonly string[]).includes(explicit)) return explicit as Modality;
  const arch = metadata['architecture']?.toLowerCase();
  if (arch && (arch.includes('dit') || arch.includes('diffusion'))) {
    if (arch.includes('text') || arch.includes('mdlm')) return 'text';
    if (arch.includes('image') || arch.includes('vae')) return 'image';
    if (arch.includes('audio') || arch.includes('wavegrad')) return 'audio';
    if (arch.includes('code')) return 'code';
  }
  let text = 0;
  let image = 0;
  let audio = 0;
  for (const name of names) {
    const n = name.toLowerCase();
    if (TEXT.some((p) => n.includes(p))) text++;
    if (IMAGE.some((p) => n.includes(p))) image++;
    if (AUDIO.some((p) => n.includes(p))) audio++;
  }
  if (text === 0 && image === 0 && audio === 0) return null;
  if (image > text && image > audio) return 'image';
  if (audio > text && audio > image) return 'audio';
  return 'text';
}
