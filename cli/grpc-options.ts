// gRPC TLS options of the CLI: server side (coordinator) and client side (worker).

import type { Command } from 'commander';
import { UsageError } from '../core/errors.js';
import { loadClientTls, loadServerTls, type ClientTlsOptions, type ServerTlsOptions } from '../core/grpc/tls.js';

export function addGrpcServerOptions(cmd: Command): Command {
  cmd.optionsGroup('gRPC (shard uploads and tensor downloads; plaintext unless these are given):');
  return cmd
    .option('--grpc-tls-cert <file>', 'serve TLS with this certificate (with --grpc-tls-key)')
    .option('--grpc-tls-key <file>', 'the private key of --grpc-tls-cert')
    .option('--grpc-tls-client-ca <file>', 'require client certificates signed by this CA (mutual TLS)');
}

export function addGrpcClientOptions(cmd: Command): Command {
  cmd.optionsGroup('gRPC to coordinators that serve TLS:');
  return cmd
    .option('--grpc-tls-ca <file>', 'trust this CA')
    .option('--grpc-tls-cert <file>', 'client certificate for mutual TLS (with --grpc-tls-key)')
    .option('--grpc-tls-key <file>', 'the private key of --grpc-tls-cert');
}

export interface GrpcTlsValues {
  'grpc-tls-ca'?: string;
  'grpc-tls-cert'?: string;
  'grpc-tls-key'?: string;
  'grpc-tls-client-ca'?: string;
}

export function grpcServerTls(v: GrpcTlsValues): ServerTlsOptions | null {
  const cert = v['grpc-tls-cert'];
  const key = v['grpc-tls-key'];
  const ca = v['grpc-tls-client-ca'];
  if (!cert && !key && !ca) return null;
  if (!cert || !key) throw new UsageError('--grpc-tls-cert and --grpc-tls-key go together');
  return loadServerTls({ certFile: cert, keyFile: key, clientCaFile: ca });
}

export function grpcClientTls(v: GrpcTlsValues): ClientTlsOptions | null {
  const ca = v['grpc-tls-ca'];
  const cert = v['grpc-tls-cert'];
  const key = v['grpc-tls-key'];
  if (!ca && !cert && !key) return null;
  if ((cert && !key) || (key && !cert)) throw new UsageError('--grpc-tls-cert and --grpc-tls-key go together');
  return loadClientTls({ caFile: ca, certFile: cert, keyFile: key });
}
