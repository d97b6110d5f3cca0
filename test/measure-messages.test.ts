// The measure task and result schemas (core/cluster/measure-messages.ts): what identifies a
// question, what a result must hold, and that the four sums cross JSON bit for bit.
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { resolveConfig } from '../core/config/load.js';
import { prepareJobForPlan } from '../coordinator/job.js';
import { decodeMessage, encodeMessage } from '../core/cluster/messages.js';
import { MalformedMessageError } from '../core/cluster/errors.js';
import { measureId, measureMessageSchema, measureResultSchema, resultStats } from '../core/cluster/measure-messages.js';
import { seededRandom } from '../core/model/random.js';
import { FIXTURE_MODELS } from './helpers/cli.js';

const job = prepareJobForPlan(join(FIXTURE_MODELS, 'stories260K-bf16.safetensors'), resolveConfig({}));
const task = job.tasks[2]!;
const SUBJECT = 'aq.tasks.j.measure';

describe('measure messages', () => {
  test('measure messages - the id ignores where the file is and the plan hash, not what is measured', () => {
    const id = measureId(task, [2, 4]);
    expect(id).toMatch(/^[0-9a-f]{32}$/);
    expect(measureId({ ...task, file: '/elsewhere/model.safetensors', plan_hash: 'f'.repeat(32) }, [2, 4])).toBe(id);
    expect(measureId({ ...task, group_size: 64 }, [2, 4])).not.toBe(id);
    expect(measureId({ ...task, group_size: 32, double_quant: true }, [2, 4])).not.toBe(measureId({ ...task, group_size: 32 }, [2, 4]));
    expect(measureId(task, [2, 4, 8])).not.toBe(id);
    expect(measureId({ ...task, refine: !task.refine }, [2, 4])).not.toBe(id);
  });

  test('measure messages - a task is strict: widths ascending, distinct, 1–3 of 2/4/8; a run id; no other keys', () => {
    const good = { task, widths: [2, 8], measure_id: measureId(task, [2, 8]), run_id: 'ab'.repeat(8) };
    expect(decodeMessage(measureMessageSchema, encodeMessage(good), SUBJECT)).toEqual(good);
    const bad: [unknown, RegExp][] = [
      [{ ...good, widths: [4, 4] }, /widths: widths must be ascending and distinct/],
      [{ ...good, widths: [2, 4, 8, 8] }, /widths: Too big/],
      [{ ...good, widths: [16] }, /widths\.0: /],
      [{ ...good, measure_id: 'xyz' }, /measure_id: a measure id is 32 lowercase hex digits/],
      [{ ...good, run_id: 'R' }, /run_id: a run id is 8-64 lowercase hex digits/],
      [{ ...good, extra: 1 }, /Unrecognized key: "extra"/],
      [{ ...good, task: { ...task, job_id: '../x' } }, /task\.job_id: a job id is/],
    ];
    for (const [msg, why] of bad) {
      const err = (() => {
        try {
          decodeMessage(measureMessageSchema, encodeMessage(msg), SUBJECT);
        } catch (e) {
          return e as Error;
        }
        return null;
      })();
      expect(err).toBeInstanceOf(MalformedMessageError);
      expect(err!.message).toMatch(new RegExp(`^message on ${SUBJECT.replace(/\./g, '\\.')}: .*${why.source}`));
    }
  });

  test('measure messages - the four sums cross JSON bit for bit; a result must hold finite sums for exactly the widths asked', () => {
    const r = seededRandom(9);
    for (let i = 0; i < 200; i++) {
      const s = { bits: 4 as const, w2: r() * 1e6, e2: r() * 1e-9, wq: (r() - 0.5) * 1e3, q2: r() / 3 };
      const back = decodeMessage(measureResultSchema, encodeMessage({ measure_id: 'a'.repeat(32), worker: 'w', stats: [s] }), 'k');
      expect(back.stats[0]).toEqual(s);
      for (const k of ['w2', 'e2', 'wq', 'q2'] as const) expect(Object.is(back.stats[0]![k], s[k])).toBe(true);
    }
    const result = { measure_id: 'a'.repeat(32), worker: 'w', stats: [{ bits: 2 as const, w2: 1, e2: 0.5, wq: 0.7, q2: 0.9 }] };
    expect(resultStats(result, [2])).toEqual(new Map([[2, { w2: 1, e2: 0.5, wq: 0.7, q2: 0.9 }]]));
    expect(resultStats(result, [2, 4])).toBe('it holds widths 2 for widths 2, 4');
    // JSON has no Infinity: a sum that overflowed arrives as null and is refused
    expect(() => decodeMessage(measureResultSchema, encodeMessage({ ...result, stats: [{ ...result.stats[0], w2: Infinity }] }), 'k')).toThrow(/stats\.0\.w2: /);
    expect(() => decodeMessage(measureResultSchema, encodeMessage({ ...result, worker: 'w'.repeat(5000) }), 'k')).toThrow(/worker: Too big/);
  });
});
