import { describe, expect, test } from 'vitest';
import { seededRandom } from '../core/model/random.js';
import { MultipleChoiceKnapsack, minimumBytes, type Choice } from '../core/plan/knapsack.js';

/** Random instances shaped like layers: bytes multiples of 4 (plus an offset), costs falling with bytes. */
function instance(rand: () => number, items: number, choices: number): Choice[][] {
  return Array.from({ length: items }, () =>
    Array.from({ length: 1 + Math.floor(rand() * choices) }, () => ({ bytes: 8 + 4 * Math.floor(rand() * 40), cost: Math.round(rand() * 1000) / 7 })),
  );
}

function bruteForce(items: Choice[][], budget: number): number | null {
  let best: number | null = null;
  const walk = (i: number, bytes: number, cost: number) => {
    if (bytes > budget) return;
    if (i === items.length) {
      if (best === null || cost < best) best = cost;
      return;
    }
    for (const c of items[i]!) walk(i + 1, bytes + c.bytes, cost + c.cost);
  };
  walk(0, 0, 0);
  return best;
}

describe('knapsack', () => {
  test('knapsack - the DP matches brute force on 300 seeded random instances, at every budget', () => {
    const rand = seededRandom(1313);
    for (let k = 0; k < 300; k++) {
      const items = instance(rand, 1 + Math.floor(rand() * 5), 5);
      const lo = minimumBytes(items);
      const hi = items.reduce((s, c) => s + Math.max(...c.map((x) => x.bytes)), 0);
      const mck = new MultipleChoiceKnapsack(items, hi);
      expect(mck.exact).toBe(true);
      for (const budget of [lo - 1, lo, Math.floor((lo + hi) / 2), lo + Math.floor(rand() * (hi - lo + 1)), hi]) {
        const want = bruteForce(items, budget);
        const got = mck.solve(budget);
        if (want === null) {
          expect(got).toBeNull();
          continue;
        }
        expect(got).not.toBeNull();
        expect(got!.bytes).toBeLessThanOrEqual(budget);
        expect(got!.cost).toBeCloseTo(want, 9);
        expect(got!.gap).toBe(0);
        expect(got!.solver).toBe('dp');
        // the picks really add up to what is reported
        expect(got!.picks.reduce((s, j, i) => s + items[i]![j]!.bytes, 0)).toBe(got!.bytes);
      }
    }
  });

  test('knapsack - the Lagrangian fallback is feasible and its bound brackets the brute-force optimum', () => {
    const rand = seededRandom(77);
    let closed = 0;
    for (let k = 0; k < 200; k++) {
      const items = instance(rand, 2 + Math.floor(rand() * 4), 5);
      const lo = minimumBytes(items);
      const hi = items.reduce((s, c) => s + Math.max(...c.map((x) => x.bytes)), 0);
      const budget = lo + Math.floor(rand() * (hi - lo + 1));
      const mck = new MultipleChoiceKnapsack(items, hi, 1);
      expect(mck.exact).toBe(false);
      const got = mck.solve(budget)!;
      const want = bruteForce(items, budget)!;
      expect(got.solver).toBe('lagrangian');
      expect(got.bytes).toBeLessThanOrEqual(budget);
      expect(got.cost).toBeGreaterThanOrEqual(want - 1e-9);
      expect(got.lowerBound).toBeLessThanOrEqual(want + 1e-9);
      expect(got.gap).toBeCloseTo(got.cost - got.lowerBound, 9);
      if (got.gap < 1e-9) closed++;
    }
    expect(closed).toBeGreaterThan(20);
  });

  test('knapsack - a budget below the smallest selection has no solution; bad items are rejected', () => {
    const items = [[{ bytes: 10, cost: 1 }, { bytes: 20, cost: 0 }], [{ bytes: 6, cost: 3 }]];
    const mck = new MultipleChoiceKnapsack(items, 100);
    expect(mck.smallestBytes).toBe(16);
    expect(mck.solve(15)).toBeNull();
    expect(mck.solve(16)!.picks).toEqual([0, 0]);
    expect(mck.solve(26)!.picks).toEqual([1, 0]);
    expect(() => new MultipleChoiceKnapsack([[]], 10)).toThrow(/knapsack item 0 has 0 choices; 1 to 255 allowed/);
    expect(() => new MultipleChoiceKnapsack([[{ bytes: 1.5, cost: 0 }]], 10)).toThrow(/bytes 1.5 is not a non-negative integer/);
    expect(() => new MultipleChoiceKnapsack([[{ bytes: 1, cost: NaN }]], 10)).toThrow(/cost NaN is not a finite non-negative number/);
  });
});
