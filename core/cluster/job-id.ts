// The one syntax of a job id. An id becomes a file name (stage dir, downloads), a NATS subject
// token and a key-value key, so it may hold no path separator, no dot (subject/key hierarchy),
// no wildcard and no whitespace: letters, digits, '_' and '-', 1–64 characters.

import { z } from 'zod';
import { UsageError } from '../errors.js';

export const JOB_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
export const JOB_ID_RULE = '1-64 characters from A-Z a-z 0-9 _ -';

export const jobIdSchema = z.string().regex(JOB_ID_PATTERN, `a job id is ${JOB_ID_RULE}`);

export const isJobId = (id: unknown): id is string => typeof id === 'string' && JOB_ID_PATTERN.test(id);

/** Throws (UsageError unless `make` says otherwise) when `id` is not a job id; `where` names its origin. */
export function checkJobId(id: string, where: string, make: (msg: string) => Error = (m) => new UsageError(m)): string {
  if (!JOB_ID_PATTERN.test(id)) throw make(`${where}: ${JSON.stringify(id.length > 80 ? `${id.slice(0, 80)}…` : id)} is not a job id (${JOB_ID_RULE})`);
  return id;
}
