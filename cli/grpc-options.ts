// gRPC TLS options of the CLI: server side (coordinator) and client side (worker).

import { UsageError } from '../core/errors.js';
import { loadClientTls, loadServerTls, type ClientTlsOptions, type ServerTlsOptions } from '../core/grpc/tls.js';

export const GRPC_SERVER_OPTIONS = {
  'grpc-tls-cert': { type: 'string' },
  'grpc-tls-key': { type: 'string' },
  'grpc-tls-client-ca': { type: 'string' },
} as const;

export const GRPC_CLIENT_OPTIONS = {
  'grpc-tls-ca': { type: 'string' },
  'grpc-tls-cert': { type: 'string' },
  'grpc-tls-key': { type: 'string' },
} as const;

export const GRPC_SERVER_HELP = `gRPC (shard uploads and tensor downloads; plaintext unless these are given):
  --grpc-tls-cert FILE --grpc-tls-key FILE   serve TLS with this certificate
  --grpc-tls-client-ca FILE                  require client certificates signed by this CA (mutual TLS)`;

export const GRPC_CLIENT_HELP = `gRPC to coordinators that serve TLS:
  --grpc-tls-ca FILE                         trust this CA
  --grpc-tls-cert FILE --grpc-tls-key FILE   client certificate for mutual TLS`;

type Values = Partial<Record<string, string | boolean | string[]>>;

export function grpcServerTls(v: Values): ServerTlsOptions | null {
  const cert = v['grpc-tls-cert'] as string | undefined;
  const key = v['grpc-tls-key'] as string | undefined;
  const ca = v['grpc-tls-client-ca'] as string | undefined;
  if (!cert && !key && !ca) return null;
  if (!cert || !key) throw new UsageError('--grpc-tls-cert and --grpc-tls-key go together');
  return loadServerTls({ certFile: cert, keyFile: key, clientCaFile: ca });
}

export function grpcClientTls(v: Values): ClientTlsOptions | null {
  const ca = v['grpc-tls-ca'] as string | undefined;
  const cert = v['grpc-tls-cert'] as string | undefined;
  const key = v['grpc-tls-key'] as string | undefined;
  if (!ca && !cert && !key) return null;
  if ((cert && !key) || (key && !cert)) throw new UsageError('--grpc-tls-cert and --grpc-tls-key go together');
  return loadClientTls({ caFile: ca, certFile: cert, keyFile: key });
}
