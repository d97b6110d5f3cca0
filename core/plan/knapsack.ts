// The multiple-choice knapsack behind the measured allocation: one choice per item (a layer's
// candidate encodings), minimising Σ cost subject to Σ bytes ≤ budget.
//
// Exact: dynamic programming over bytes in units of the gcd of every choice's bytes above its
// item's smallest — exact, since every reachable total is a multiple of it. One pass up to the
// largest budget of interest answers every smaller budget too (the size–error curve).
// When the table would not fit in `maxCells`, a Lagrangian relaxation gives a feasible choice,
// greedily improved, and a lower bound: the optimality gap is reported, never hidden.

export interface Choice {
  bytes: number;
  cost: number;
}

export interface KnapsackSolution {
  /** index of the chosen choice, per item */
  picks: number[];
  bytes: number;
  cost: number;
  /** a proven lower bound on the optimum's cost at this budget (= cost when exact) */
  lowerBound: number;
  /** cost − lowerBound: 0 for the exact solver */
  gap: number;
  solver: 'dp' | 'lagrangian';
}

/** Default bound on the DP's choice table (items × byte units), one byte per cell. */
export const DEFAULT_MAX_CELLS = 64 * 1024 * 1024;

const gcd = (a: number, b: number): number => {
  while (b) [a, b] = [b, a % b];
  return a;
};

function checkItems(items: readonly (readonly Choice[])[]): void {
  items.forEach((choices, i) => {
    if (choices.length === 0 || choices.length > 255) throw new RangeError(`knapsack item ${i} has ${choices.length} choices; 1 to 255 allowed`);
    for (const c of choices) {
      if (!Number.isSafeInteger(c.bytes) || c.bytes < 0) throw new RangeError(`knapsack item ${i}: bytes ${c.bytes} is not a non-negative integer`);
      if (!Number.isFinite(c.cost) || c.cost < 0) throw new RangeError(`knapsack item ${i}: cost ${c.cost} is not a finite non-negative number`);
    }
  });
}

/** The smallest total bytes any selection reaches. */
export function minimumBytes(items: readonly (readonly Choice[])[]): number {
  return items.reduce((s, c) => s + Math.min(...c.map((x) => x.bytes)), 0);
}

export class MultipleChoiceKnapsack {
  private readonly base: number;
  private readonly unit: number;
  /** per item: units above its smallest choice, per choice */
  private readonly units: Int32Array[];
  private readonly table: Uint8Array[] | null = null;
  /** byte-unit states the table covers (0 without a table) */
  private readonly maxStates: number = 0;

  /** Prepare for budgets up to `maxBudget` (the DP table is built here when it fits). */
  constructor(
    private readonly items: readonly (readonly Choice[])[],
    maxBudget: number,
    maxCells = DEFAULT_MAX_CELLS,
  ) {
    checkItems(items);
    this.base = minimumBytes(items);
    let unit = 0;
    for (const choices of items) {
      const lo = Math.min(...choices.map((c) => c.bytes));
      for (const c of choices) unit = gcd(unit, c.bytes - lo);
    }
    this.unit = Math.max(1, unit);
    this.units = items.map((choices) => {
      const lo = Math.min(...choices.map((c) => c.bytes));
      return Int32Array.from(choices, (c) => (c.bytes - lo) / this.unit);
    });
    const states = Math.max(0, Math.floor((maxBudget - this.base) / this.unit)) + 1;
    if (states * Math.max(1, items.length) > maxCells) return;
    this.table = [];
    let prev = new Float64Array(states);
    for (let i = 0; i < items.length; i++) {
      const cur = new Float64Array(states);
      const row = new Uint8Array(states);
      const w = this.units[i]!;
      const cost = items[i]!.map((c) => c.cost);
      for (let s = 0; s < states; s++) {
        let v = Infinity;
        let pick = 0;
        for (let j = 0; j < w.length; j++) {
          const wj = w[j]!;
          if (wj > s) continue;
          const x = prev[s - wj]! + cost[j]!;
          if (x < v) {
            v = x;
            pick = j;
          }
        }
        cur[s] = v;
        row[s] = pick;
      }
      this.table.push(row);
      prev = cur;
    }
    this.maxStates = states;
  }

  /** True when budgets up to the constructor's are solved exactly. */
  get exact(): boolean {
    return this.table !== null;
  }

  get smallestBytes(): number {
    return this.base;
  }

  /** The optimum at `budget`, or null when no selection fits. */
  solve(budget: number): KnapsackSolution | null {
    if (budget < this.base) return null;
    if (!this.table || Math.floor((budget - this.base) / this.unit) >= this.maxStates) return this.lagrangian(budget);
    let s = Math.floor((budget - this.base) / this.unit);
    const picks = new Array<number>(this.items.length);
    for (let i = this.items.length - 1; i >= 0; i--) {
      const j = this.table[i]![s]!;
      picks[i] = j;
      s -= this.units[i]![j]!;
    }
    return this.describe(picks, 'dp', null);
  }

  private describe(picks: number[], solver: KnapsackSolution['solver'], lowerBound: number | null): KnapsackSolution {
    let bytes = 0;
    let cost = 0;
    picks.forEach((j, i) => {
      bytes += this.items[i]![j]!.bytes;
      cost += this.items[i]![j]!.cost;
    });
    const lb = lowerBound === null ? cost : Math.min(cost, lowerBound);
    return { picks, bytes, cost, lowerBound: lb, gap: cost - lb, solver };
  }

  /** Each item's argmin of cost + λ·bytes (ties to fewer bytes, then the lower index). */
  private relaxed(lambda: number): { picks: number[]; bytes: number; value: number } {
    let bytes = 0;
    let value = 0;
    const picks = this.items.map((choices) => {
      let best = 0;
      for (let j = 1; j < choices.length; j++) {
        const a = choices[j]!.cost + lambda * choices[j]!.bytes;
        const b = choices[best]!.cost + lambda * choices[best]!.bytes;
        if (a < b || (a === b && choices[j]!.bytes < choices[best]!.bytes)) best = j;
      }
      bytes += choices[best]!.bytes;
      value += choices[best]!.cost + lambda * choices[best]!.bytes;
      return best;
    });
    return { picks, bytes, value };
  }

  private lagrangian(budget: number): KnapsackSolution {
    const free = this.relaxed(0);
    if (free.bytes <= budget) return this.describe(free.picks, 'lagrangian', free.value);
    let lo = 0;
    let hi = 1;
    while (this.relaxed(hi).bytes > budget) hi *= 2;
    for (let k = 0; k < 100; k++) {
      const mid = (lo + hi) / 2;
      if (this.relaxed(mid).bytes > budget) lo = mid;
      else hi = mid;
    }
    // Both ends bound the optimum from below (weak duality); the feasible end is the start.
    const bound = Math.max(this.relaxed(lo).value - lo * budget, this.relaxed(hi).value - hi * budget);
    const picks = this.relaxed(hi).picks;
    this.improveGreedily(picks, budget);
    return this.describe(picks, 'lagrangian', bound);
  }

  /** Take the change that saves the most cost per added byte while it fits, until none does. */
  private improveGreedily(picks: number[], budget: number): void {
    let bytes = picks.reduce((s, j, i) => s + this.items[i]![j]!.bytes, 0);
    for (;;) {
      let best: { i: number; j: number; rate: number } | null = null;
      this.items.forEach((choices, i) => {
        const cur = choices[picks[i]!]!;
        choices.forEach((c, j) => {
          const extra = c.bytes - cur.bytes;
          const saved = cur.cost - c.cost;
          if (saved <= 0 || bytes + extra > budget) return;
          const rate = extra <= 0 ? Infinity : saved / extra;
          if (!best || rate > best.rate) best = { i, j, rate };
        });
      });
      if (!best) return;
      const { i, j } = best;
      bytes += this.items[i]![j]!.bytes - this.items[i]![picks[i]!]!.bytes;
      picks[i] = j;
    }
  }
}
