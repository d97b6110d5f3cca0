// Keys of layer_bit_widths: an exact layer name, `re:<regex>`, or a glob where `*` matches any
// run of characters. Lookup: the exact name wins, then the first matching pattern in map order.

export type LayerMatcher = (name: string) => boolean;

export function isPatternKey(key: string): boolean {
  return key.startsWith('re:') || key.includes('*');
}

export function compilePattern(key: string): LayerMatcher {
  if (key.startsWith('re:')) {
    const re = new RegExp(key.slice(3));
    return (name) => re.test(name);
  }
  const re = new RegExp('^' + key.split('*').map(escapeRegex).join('.*') + '$');
  return (name) => re.test(name);
}

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

export interface LayerWidthMatch<T> {
  value: T;
  key: string;
  exact: boolean;
}

/** Compiled lookup over a map of name-or-pattern → value. */
export class LayerPatternMap<T> {
  private readonly exact = new Map<string, T>();
  private readonly patterns: { key: string; test: LayerMatcher; value: T }[] = [];

  constructor(entries: Record<string, T>) {
    for (const [key, value] of Object.entries(entries)) {
      if (isPatternKey(key)) this.patterns.push({ key, test: compilePattern(key), value });
      else this.exact.set(key, value);
    }
  }

  lookup(name: string): LayerWidthMatch<T> | undefined {
    if (this.exact.has(name)) return { value: this.exact.get(name)!, key: name, exact: true };
    for (const p of this.patterns) if (p.test(name)) return { value: p.value, key: p.key, exact: false };
    return undefined;
  }
}
