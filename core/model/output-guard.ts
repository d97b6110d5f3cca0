// The output must never be the input: writing the Arrow file over the model (or one of its
// shards, or its index) would destroy the source. Compared by real path, so links and ../ count.

import { existsSync, realpathSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { UsageError } from '../errors.js';
import { INDEX_FILE, type ModelSource } from './model-source.js';

/** The real path `p` has, or would have once created in its (existing) directory. */
function realTarget(p: string): string {
  const abs = resolve(p);
  return existsSync(abs) ? realpathSync(abs) : join(realpathSync(dirname(abs)), basename(abs));
}

/** Throws UsageError when `output` is the file `input` (dequantize's output over its Arrow input). */
export function assertOutputIsNotFile(input: string, output: string): void {
  if (existsSync(input) && existsSync(dirname(resolve(output))) && realpathSync(input) === realTarget(output)) {
    throw new UsageError(`output ${output} is the input file ${input}; writing it would destroy the input: choose another output path`);
  }
}

/** Throws UsageError when `output` is the model path, one of its shards or its index file. */
export function assertOutputIsNotInput(model: ModelSource, output: string): void {
  const target = realTarget(output);
  const inputs = [model.path, ...model.shards.map((s) => s.file), join(model.path, INDEX_FILE)].filter((f) => existsSync(f));
  for (const input of inputs) {
    if (realpathSync(input) === target) {
      const what = input === model.path ? 'the input model' : `part of the input model (${basename(input)})`;
      throw new UsageError(`output ${output} is ${what}; writing it would destroy the source: choose another output path`);
    }
  }
}
