// Opening a model file without ever blocking: a FIFO or a device under a model root would block
// a plain open (and the thread or event loop doing it) until someone writes to it. O_NONBLOCK
// makes that open return at once; the fstat of the opened fd (not a stat of the path before it,
// which the file can be swapped under) then refuses anything that is not a regular file.

import { closeSync, constants, fstatSync, openSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { ModelFormatError } from '../errors.js';

/** A read-only fd of `path`, which must be a regular file; throws ModelFormatError otherwise. */
export function openRegularFileSync(path: string): number {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  let regular = false;
  try {
    regular = fstatSync(fd).isFile();
  } finally {
    if (!regular) closeSync(fd);
  }
  if (!regular) throw new ModelFormatError(`${path} is not a regular file`, path);
  return fd;
}

/** The same for the event loop's reads: a handle of `path`, which must be a regular file. */
export async function openRegularFile(path: string): Promise<FileHandle> {
  const fh = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  let regular = false;
  try {
    regular = (await fh.stat()).isFile();
  } finally {
    if (!regular) await fh.close();
  }
  if (!regular) throw new ModelFormatError(`${path} is not a regular file`, path);
  return fh;
}
