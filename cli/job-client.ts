// The CLI's side of the job API: a client for --coordinator HOST:PORT with the bearer token (from
// --auth-token-file or $ARROW_QUANT_COORDINATOR_TOKEN) and TLS options, unary calls with a
// deadline, and gRPC failures turned into typed errors (INVALID_ARGUMENT → exit 2).

import { Metadata, status as Status, type ServiceError } from '@grpc/grpc-js';
import { ArrowQuantError, UsageError } from '../core/errors.js';
import { GRPC_MESSAGE_LIMITS } from '../core/grpc/proto.js';
import { clientCredentials } from '../core/grpc/tls.js';
import { statusName } from '../core/grpc/errors.js';
import { jobsService, type JobsClient } from '../core/grpc/jobs-proto.js';
import { loadToken } from '../coordinator/service/bearer-auth.js';
import { grpcClientTls, type GrpcTlsValues } from './grpc-options.js';

/** Unary calls that take longer are abandoned with a message. */
export const CALL_DEADLINE_MS = 30_000;

export interface CoordinatorClientValues extends GrpcTlsValues {
  coordinator?: string;
  'auth-token-file'?: string;
}

/** A call the coordinator refused or could not answer. Exit 2 for a refused request, else 1. */
export class JobApiError extends ArrowQuantError {
  override readonly exitCode: number;
  constructor(message: string, readonly code: number, readonly address: string) {
    super(message);
    this.exitCode = code === Status.INVALID_ARGUMENT || code === Status.NOT_FOUND || code === Status.ALREADY_EXISTS || code === Status.UNAUTHENTICATED ? 2 : 1;
  }
}

export interface JobApi {
  client: JobsClient;
  address: string;
  metadata: () => Metadata;
  close(): void;
}

export function connectJobApi(values: CoordinatorClientValues, env: NodeJS.ProcessEnv): JobApi {
  const address = values.coordinator;
  if (!address) throw new UsageError('missing --coordinator HOST:PORT');
  if (!/^(\[[0-9a-fA-F:.]+\]|[^:[\]\s/]+):\d{1,5}$/.test(address)) throw new UsageError(`--coordinator "${address}" is not host:port`);
  const token = loadToken(values['auth-token-file'], env);
  const { credentials, channelOptions } = clientCredentials(grpcClientTls(values));
  const { Client } = jobsService();
  // Keepalive pings: a Watch of a long job notices a coordinator that vanished without closing.
  const client = new Client(address, credentials, { ...GRPC_MESSAGE_LIMITS, ...channelOptions, 'grpc.keepalive_time_ms': 30_000, 'grpc.keepalive_timeout_ms': 10_000 });
  return {
    client,
    address,
    metadata: () => {
      const md = new Metadata();
      if (token) md.set('authorization', `Bearer ${token}`);
      return md;
    },
    close: () => client.close(),
  };
}

export function toJobApiError(e: unknown, what: string, address: string): ArrowQuantError {
  if (e instanceof ArrowQuantError) return e;
  const se = e as Partial<ServiceError>;
  const code = typeof se.code === 'number' ? se.code : Status.UNKNOWN;
  return new JobApiError(`${what} at ${address}: ${statusName(code)}: ${se.details ?? (e as Error)?.message ?? String(e)}`, code, address);
}

/** A unary call with a deadline, as a promise. */
export function unary<Req, Res>(
  api: JobApi, what: string, method: (req: Req, md: Metadata, opts: { deadline: Date }, cb: (err: ServiceError | null, res?: Res) => void) => unknown, req: Req,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    method.call(api.client, req, api.metadata(), { deadline: new Date(Date.now() + CALL_DEADLINE_MS) }, (err, res) => {
      if (err) reject(toJobApiError(err, what, api.address));
      else resolve(res!);
    });
  });
}
