// Which files a submitted job may read and write: models (and calibration files) only under the
// operator's --model-root directories, outputs only under the output root. Paths are compared
// after realpath, so neither "..", nor a symbolic link, nor a relative path leads outside.

import { existsSync, lstatSync, realpathSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { ArrowQuantError } from '../../core/errors.js';

/** A request naming a path the coordinator does not serve; the API answers INVALID_ARGUMENT. */
export class PathPolicyError extends ArrowQuantError {
  override readonly exitCode = 2;
  constructor(
    message: string,
    readonly path: string,
  ) {
    super(message);
  }
}

const within = (root: string, path: string) => {
  const rel = relative(root, path);
  return rel === '' || (!rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel));
};

export class PathPolicy {
  readonly modelRoots: string[];
  readonly outputRoot: string;

  /** Roots must exist; they are kept as real paths. */
  constructor(modelRoots: string[], outputRoot: string) {
    this.modelRoots = modelRoots.map((r) => realRoot(r, '--model-root'));
    this.outputRoot = realRoot(outputRoot, '--output-root');
  }

  /** The real path of a model (or calibration file) under a model root. */
  model(path: string, what = 'model'): string {
    if (!isAbsolute(path)) throw new PathPolicyError(`${what} "${path}" is not an absolute path on the coordinator; allowed: paths under ${this.rootsText()}`, path);
    let real: string;
    try {
      real = realpathSync(path);
    } catch {
      throw new PathPolicyError(`${what} "${path}" does not exist on the coordinator (allowed: paths under ${this.rootsText()})`, path);
    }
    if (!this.modelRoots.some((root) => within(root, real))) {
      throw new PathPolicyError(`${what} "${path}" is outside the coordinator's model roots; allowed: paths under ${this.rootsText()}`, path);
    }
    return real;
  }

  /** The absolute path of an output under the output root (relative paths are relative to it). */
  output(path: string): string {
    const abs = resolve(this.outputRoot, path);
    const dir = dirname(abs);
    let realDir: string;
    try {
      realDir = realpathSync(dir);
    } catch {
      throw new PathPolicyError(`output "${path}": directory ${dir} does not exist under the output root ${this.outputRoot}`, path);
    }
    if (!within(this.outputRoot, realDir) || basename(abs) === '' || abs === this.outputRoot) {
      throw new PathPolicyError(`output "${path}" is outside the coordinator's output root; allowed: files under ${this.outputRoot}`, path);
    }
    const out = join(realDir, basename(abs));
    // An existing symbolic link would be followed by the writer: refuse it rather than resolve it.
    if (existsSync(out) && lstatSync(out).isSymbolicLink()) throw new PathPolicyError(`output "${path}" is a symbolic link; give a plain file name under ${this.outputRoot}`, path);
    return out;
  }

  private rootsText(): string {
    return this.modelRoots.join(', ');
  }
}

function realRoot(dir: string, flag: string): string {
  try {
    return realpathSync(dir);
  } catch {
    throw new PathPolicyError(`${flag} ${dir} does not exist`, dir);
  }
}
