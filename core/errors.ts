// Typed errors shared by every part of ArrowQuant. Each class carries the fields a user needs
// (file, tensor, key, layer) and the process exit code of interfaces.md:
// 1 runtime failure, 2 bad input or usage, 3 a quality bar or size budget broken.

export class ArrowQuantError extends Error {
  readonly exitCode: number = 1;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Bad command-line usage (unknown option, missing argument). */
export class UsageError extends ArrowQuantError {
  override readonly exitCode = 2;
}

/** An invalid configuration value or unknown key; names the key and what is allowed. */
export class ConfigError extends ArrowQuantError {
  override readonly exitCode = 2;
  constructor(
    message: string,
    readonly key: string,
    readonly source: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A malformed or lying model file; names the file and, where known, the tensor. */
export class ModelFormatError extends ArrowQuantError {
  override readonly exitCode = 2;
  constructor(
    message: string,
    readonly file: string,
    readonly tensor?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The size target cannot be met even with every quantized layer at 2 bits. */
export class InfeasibleTargetError extends ArrowQuantError {
  override readonly exitCode = 2;
  constructor(
    message: string,
    readonly targetBytes: number,
    readonly smallestReachableBytes: number,
  ) {
    super(message);
  }
}

/** NaN or ±Inf in a tensor that is to be quantized. */
export class NonFiniteWeightError extends ArrowQuantError {
  override readonly exitCode = 2;
  constructor(
    readonly layer: string,
    readonly index: number,
    readonly value: number,
  ) {
    super(`layer "${layer}": element ${index} is ${value}; quantization needs finite weights`);
  }
}

/** A malformed calibration file. */
export class CalibrationError extends ArrowQuantError {
  override readonly exitCode = 2;
  constructor(
    message: string,
    readonly file: string,
    readonly line?: number,
  ) {
    super(message);
  }
}

/** An output or arrow file that cannot be read back as format.md describes. */
export class FormatError extends ArrowQuantError {
  override readonly exitCode = 2;
  constructor(
    message: string,
    readonly file: string,
  ) {
    super(message);
  }
}

/** A layer below its quality bar with fail_fast, or the job below min_accuracy. */
export class QualityBarError extends ArrowQuantError {
  override readonly exitCode = 3;
  constructor(
    message: string,
    readonly layer?: string,
    readonly cosine?: number,
  ) {
    super(message);
  }
}

/** Quality fallbacks pushed bytes_out over target_model_size_mb. */
export class SizeBudgetError extends ArrowQuantError {
  override readonly exitCode = 3;
  constructor(
    message: string,
    readonly layers: string[],
    readonly bytesOut: number,
    readonly targetBytes: number,
  ) {
    super(message);
  }
}

/** `verify` found a difference between the file and the source. */
export class VerificationError extends ArrowQuantError {
  override readonly exitCode = 1;
  constructor(
    message: string,
    readonly mismatches: string[],
  ) {
    super(message);
  }
}

/** Writing the output failed (unwritable path, full disk). */
export class OutputError extends ArrowQuantError {
  override readonly exitCode = 1;
  constructor(
    message: string,
    readonly path: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The job was cancelled (a signal, or `cancel`); exit code 130 like an interrupted command. */
export class JobCancelledError extends ArrowQuantError {
  override readonly exitCode = 130;
  constructor(readonly jobId: string) {
    super(`job ${jobId} was cancelled`);
  }
}

/** An OutputError from a file system error while writing `path`, saying why in words. */
export function outputErrorFrom(path: string, e: unknown): OutputError {
  if (e instanceof OutputError) return e;
  const code = (e as NodeJS.ErrnoException).code;
  const why =
    code === 'ENOSPC' ? 'the disk is full (no space left on device)'
    : code === 'EACCES' || code === 'EPERM' ? 'permission denied'
    : code === 'ENOENT' ? 'the directory does not exist'
    : code === 'EROFS' ? 'the file system is read-only'
    : (code ?? (e as Error).message);
  return new OutputError(`cannot write ${path}: ${why}`, path, { cause: e });
}

export function exitCodeOf(err: unknown): number {
  return err instanceof ArrowQuantError ? err.exitCode : 1;
}

const ERROR_CLASSES: Record<string, new (...args: never[]) => ArrowQuantError> = {
  ArrowQuantError, UsageError, ConfigError, ModelFormatError, InfeasibleTargetError, NonFiniteWeightError, CalibrationError,
  FormatError, QualityBarError, SizeBudgetError, VerificationError, OutputError, JobCancelledError,
};

export interface SerializedError {
  name: string;
  message: string;
  fields: Record<string, unknown>;
}

/** For crossing a thread or process boundary: name, message and the typed fields. */
export function serializeError(e: unknown): SerializedError {
  if (e instanceof Error) {
    const fields: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(e)) if (['string', 'number', 'boolean'].includes(typeof v) || Array.isArray(v)) fields[k] = v;
    return { name: e.name, message: e.message, fields };
  }
  return { name: 'Error', message: String(e), fields: {} };
}

/** The typed error again (its class by name), or a plain ArrowQuantError with the message. */
export function deserializeError(s: SerializedError): Error {
  const cls = ERROR_CLASSES[s.name];
  const err: Error = cls ? Object.create(cls.prototype) : new ArrowQuantError(s.message);
  if (cls) {
    Object.defineProperty(err, 'message', { value: s.message, enumerable: false, writable: true, configurable: true });
    Object.defineProperty(err, 'name', { value: s.name, enumerable: false, writable: true, configurable: true });
    Object.defineProperty(err, 'stack', { value: `${s.name}: ${s.message}`, enumerable: false, writable: true, configurable: true });
  }
  return Object.assign(err, s.fields);
}
