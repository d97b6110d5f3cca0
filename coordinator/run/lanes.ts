// The one concurrency loop of a job: items 0..n−1 with at most `limit` in flight, started in order.

import { ArrowQuantError } from '../../core/errors.js';

/**
 * Run `run(0..n−1)`, at most `limit` at once. On the first failure no new item starts; once the
 * running ones settle, the failure of the lowest index is thrown (so the error a user sees does
 * not depend on thread timing). `onDone` hears of each result as it comes.
 */
export async function runInLanes<T>(n: number, limit: number, run: (i: number) => Promise<T>, onDone?: (result: T, i: number) => void): Promise<T[]> {
  const results: T[] = new Array(n);
  const failures: { index: number; error: unknown }[] = [];
  let next = 0;
  const lane = async () => {
    while (failures.length === 0 && next < n) {
      const i = next++;
      try {
        const r = await run(i);
        results[i] = r;
        onDone?.(r, i);
      } catch (error) {
        failures.push({ index: i, error });
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, n)) }, lane));
  if (failures.length) {
    const first = failures.sort((a, b) => a.index - b.index)[0]!.error;
    throw first instanceof Error ? first : new ArrowQuantError(String(first));
  }
  return results;
}
