// Errors of cluster mode (NATS control plane, task handling). The gRPC data plane has its own
// in core/grpc/errors.ts.

import { ArrowQuantError } from '../errors.js';

/** A message on NATS that is not what its subject promises (malformed JSON, wrong fields). */
export class MalformedMessageError extends ArrowQuantError {
  override readonly exitCode = 2;
  constructor(
    message: string,
    readonly subject: string,
  ) {
    super(message);
  }
}

/** Could not reach NATS, or JetStream is not enabled there. */
export class NatsConnectionError extends ArrowQuantError {
  constructor(
    message: string,
    readonly servers: string[],
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A worker refused a task (file outside its model roots, download not allowed). */
export class TaskRefusedError extends ArrowQuantError {
  constructor(
    message: string,
    readonly layer: string,
    readonly worker: string,
  ) {
    super(message);
  }
}

/** A task was delivered the maximum number of times without success. */
export class DeliveriesExhaustedError extends ArrowQuantError {
  constructor(
    message: string,
    readonly layer: string,
    readonly deliveries: number,
  ) {
    super(message);
  }
}

/** Another live coordinator holds the job (its lease in the job state is still being renewed). */
export class JobHeldError extends ArrowQuantError {
  override readonly exitCode = 2;
  constructor(
    message: string,
    readonly jobId: string,
    readonly holder: string,
  ) {
    super(message);
  }
}

/** No progress for the stall timeout; the message says what was waited for. */
export class JobStalledError extends ArrowQuantError {}
