// A coordinator's own disk failing (full, read-only, I/O error) cannot be fixed by redoing a
// layer on another worker: such an error fails the job at once, naming the path and the cause.

import { outputErrorFrom, type OutputError } from '../../core/errors.js';

/** errno codes of a local file system that will not take the coordinator's bytes. */
const DISK_ERRNOS = new Set(['ENOSPC', 'EDQUOT', 'EROFS', 'EIO', 'EFBIG']);

export function isDiskFailure(e: unknown): boolean {
  return DISK_ERRNOS.has((e as NodeJS.ErrnoException | null)?.code ?? '');
}

/** The job-ending error for a disk failure while writing `path`, or null for any other error. */
export function diskFailure(path: string, e: unknown): OutputError | null {
  return isDiskFailure(e) ? outputErrorFrom(path, e) : null;
}
