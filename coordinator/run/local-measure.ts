// "Start a pool, measure, close it": the measured allocation on this machine's threads, for a
// run whose own quantizing happens elsewhere (`plan`, or a cluster job until its workers measure).

import { LayerRunner } from '../../worker/layer-runner.js';
import { ThreadPool, resolveThreads } from '../../worker/thread-pool.js';
import type { LayerMeasurer } from '../layer-measurements.js';

/** `use` gets a measurer on a fresh pool of `num_threads` threads and how many layers to measure at once; the pool is closed after. */
export async function withLocalMeasurer<T>(numThreads: number, use: (measurer: LayerMeasurer, concurrency: number) => Promise<T>): Promise<T> {
  const pool = await ThreadPool.start(resolveThreads(numThreads));
  try {
    return await use(new LayerRunner(pool), pool.size + 1);
  } finally {
    await pool.close();
  }
}
