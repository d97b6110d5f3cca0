// Typed errors of the gRPC data plane: a failed call (with its status code), a bad TLS
// setting, a local file that cannot be read or written, an address that cannot be bound.

import { status as Status, type ServiceError } from '@grpc/grpc-js';
import { ArrowQuantError } from '../errors.js';

/** The name of a gRPC status code ("DATA_LOSS" for 15), or "CODE_<n>" for an unknown one. */
export function statusName(code: number): string {
  return (Status as unknown as Record<number, string>)[code] ?? `CODE_${code}`;
}

/** A shard upload, tensor download or health call that ended with a non-OK gRPC status. */
export class ShardTransferError extends ArrowQuantError {
  /** e.g. "DATA_LOSS" */
  readonly codeName: string;
  constructor(
    message: string,
    /** the gRPC status code */
    readonly code: number,
    /** the status details sent by the peer (or by grpc-js for transport failures) */
    readonly details: string,
    /** the peer, host:port */
    readonly address: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.codeName = statusName(code);
  }

  /** UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED: the same call may succeed later. */
  get retryable(): boolean {
    return [Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED, Status.RESOURCE_EXHAUSTED, Status.ABORTED].includes(this.code);
  }
}

function isServiceError(e: unknown): e is ServiceError {
  return e instanceof Error && typeof (e as Partial<ServiceError>).code === 'number' && 'details' in e;
}

/**
 * Maps whatever a call failed with to a ShardTransferError naming the action and the peer,
 * e.g. `upload of layer 3 of job j1 to 10.0.0.5:7070 failed: DATA_LOSS: size 10 ≠ 12`.
 */
export function toShardTransferError(e: unknown, action: string, address: string): ShardTransferError {
  if (e instanceof ShardTransferError) return e;
  const code = isServiceError(e) ? e.code : Status.UNKNOWN;
  const details = isServiceError(e) ? e.details : e instanceof Error ? e.message : String(e);
  return new ShardTransferError(`${action} to ${address} failed: ${statusName(code)}: ${details}`, code, details, address, { cause: e });
}

/** A TLS setting that cannot be used: a missing or unreadable PEM file, or an incomplete pair. */
export class TlsConfigError extends ArrowQuantError {
  override readonly exitCode = 2;
  constructor(
    message: string,
    /** the option at fault, e.g. "keyFile" */
    readonly option: string,
    readonly file?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A local file of a transfer (the shard to upload, the download destination) failed. */
export class ShardFileError extends ArrowQuantError {
  constructor(
    message: string,
    readonly path: string,
    readonly operation: 'read' | 'write',
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A gRPC server could not bind its listen address. */
export class GrpcListenError extends ArrowQuantError {
  constructor(
    message: string,
    readonly listen: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
