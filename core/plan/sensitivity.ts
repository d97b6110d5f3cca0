// Sensitive layers (embeddings, norms, heads): kept as 16-bit floats by the heuristic and by
// skip_sensitive_layers. The seed's lower-cased substrings, plus configured names and patterns.

import type { ArrowQuantConfig } from '../config/schema.js';

export const SEED_SENSITIVE_SUBSTRINGS = [
  'embed', 'embedding', '.wte.', '.wpe.', 'norm', 'ln_', 'layernorm', 'lm_head', '.head.', 'output', 'pooler',
] as const;

export class SensitivityDetector {
  private readonly names: Set<string>;
  private readonly patterns: { source: string; re: RegExp }[];

  constructor(cfg: Pick<ArrowQuantConfig, 'sensitive_layer_names' | 'sensitive_layer_patterns'>) {
    this.names = new Set(cfg.sensitive_layer_names);
    this.patterns = cfg.sensitive_layer_patterns.map((p) => ({ source: p, re: new RegExp(p) }));
  }

  /** Why `name` is sensitive, or null when it is not. */
  reason(name: string): string | null {
    const lower = name.toLowerCase();
    for (const s of SEED_SENSITIVE_SUBSTRINGS) if (lower.includes(s)) return `sensitive: name contains "${s}"`;
    if (this.names.has(name)) return 'sensitive: listed in sensitive_layer_names';
    for (const p of this.patterns) if (p.re.test(name)) return `sensitive: matches sensitive_layer_patterns /${p.source}/`;
    return null;
  }

  isSensitive(name: string): boolean {
    return this.reason(name) !== null;
  }
}
