// Bearer-token authentication of the job API: `authorization: Bearer <token>` metadata compared in
// constant time (both sides hashed to equal length first, so neither content nor length leaks
// through timing). The token comes from a file or the environment, never from argv.

import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Metadata, status as Status, type ServiceError } from '@grpc/grpc-js';
import { UsageError } from '../../core/errors.js';

export const TOKEN_ENV = 'ARROW_QUANT_COORDINATOR_TOKEN';
const MAX_TOKEN_CHARS = 4096;

/** The token in `file` (trimmed), else in $ARROW_QUANT_COORDINATOR_TOKEN, else null (no token). */
export function loadToken(file: string | undefined, env: NodeJS.ProcessEnv, flag = '--auth-token-file'): string | null {
  let token: string | undefined;
  if (file) {
    try {
      token = readFileSync(file, 'utf8').trim();
    } catch (e) {
      throw new UsageError(`${flag} ${file} cannot be read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    if (!token) throw new UsageError(`${flag} ${file} is empty`);
  } else token = env[TOKEN_ENV]?.trim() || undefined;
  if (token === undefined) return null;
  if (token.length > MAX_TOKEN_CHARS || !/^[\x21-\x7e]+$/.test(token)) {
    throw new UsageError(`${file ? `${flag} ${file}` : TOKEN_ENV}: a token is 1..${MAX_TOKEN_CHARS} printable ASCII characters without spaces`);
  }
  return token;
}

const digest = (s: string) => createHash('sha256').update(s).digest();

/** null when the call may proceed, else the UNAUTHENTICATED error to answer with. */
export function checkBearer(expected: string | null, metadata: Metadata): ServiceError | null {
  if (expected === null) return null;
  const values = metadata.get('authorization');
  const header = values.length === 1 && typeof values[0] === 'string' ? values[0] : '';
  const m = /^Bearer (\S{1,4096})$/.exec(header);
  const ok = m !== null && timingSafeEqual(digest(m[1]!), digest(expected));
  if (ok) return null;
  const details = header ? 'the bearer token is not valid' : 'missing "authorization: Bearer <token>" metadata';
  return Object.assign(new Error(details), { code: Status.UNAUTHENTICATED, details, metadata: new Metadata() });
}
