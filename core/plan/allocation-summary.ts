// What the measured allocation knows about its choice, predicted from the measured errors: its
// point, the heuristic's and uniform INT4's with the optimum at their sizes, and the size–error
// curve. Carried by the plan, printed by `plan`, stored in the file as `arrowquant.allocation`
// (format.md) for `report`.

import { z } from 'zod';

/** Total error = Σ over layers params × ‖W−Ŵ‖²/‖W‖²; the weighted figures as the file summary computes them. */
export interface AllocationPoint {
  bytes_out: number;
  total_error: number;
  weighted_sqnr_db: number | null;
  weighted_cosine: number | null;
}

export interface ComparedPoint extends AllocationPoint {
  /** the measured optimum at no more than this point's bytes (null when none fits) */
  optimum_at_same_bytes: AllocationPoint | null;
}

export interface AllocationSummary {
  strategy: 'measured';
  /** dp: exact; lagrangian: with optimality_gap; bars: no size target, fewest bytes meeting the bars */
  solver: 'dp' | 'lagrangian' | 'bars';
  /** the chosen allocation's total error minus a proven lower bound (0 when exact) */
  optimality_gap: number;
  target_bytes: number | null;
  /** candidates over all layers the optimiser chose from */
  candidates: number;
  chosen: AllocationPoint;
  heuristic: ComparedPoint;
  uniform_int4: ComparedPoint & { group_size: number };
  /** the optimum at several budgets, by increasing bytes */
  curve: (AllocationPoint & { budget: number })[];
}

const point = z.object({
  bytes_out: z.number(), total_error: z.number(), weighted_sqnr_db: z.number().nullable(), weighted_cosine: z.number().nullable(),
});
const compared = point.extend({ optimum_at_same_bytes: point.nullable() });

/** For reading `arrowquant.allocation` back from a file (the report). */
export const allocationSummarySchema = z.object({
  strategy: z.literal('measured'),
  solver: z.enum(['dp', 'lagrangian', 'bars']),
  optimality_gap: z.number(),
  target_bytes: z.number().nullable(),
  candidates: z.number(),
  chosen: point,
  heuristic: compared,
  uniform_int4: compared.extend({ group_size: z.number() }),
  curve: z.array(point.extend({ budget: z.number() })),
});

/** How much lower `b`'s total error is than `a`'s, in percent. */
export const errorReductionPct = (a: AllocationPoint, b: AllocationPoint): number => (a.total_error > 0 ? (100 * (a.total_error - b.total_error)) / a.total_error : 0);
