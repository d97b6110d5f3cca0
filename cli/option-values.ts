// Parsers for option values: one integer parser for every integer option, and repeatable options.
// A bad value is rejected by value ("-3 is not allowed; allowed: an integer ≥ 0"), never as a parse
// ambiguity: commander gives an option that takes a value the next word even when it starts with "-".

import { InvalidArgumentError } from 'commander';

/** Parses an integer option value, at least `min`. */
export function integerAtLeast(min: number): (raw: string) => number {
  return (raw: string) => {
    const n = /^[+-]?\d+$/.test(raw.trim()) ? Number(raw) : NaN;
    if (!Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`${raw} is not allowed; allowed: an integer ≥ ${min}`);
    return n;
  };
}

/** A repeatable option: every occurrence, in order. */
export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}
