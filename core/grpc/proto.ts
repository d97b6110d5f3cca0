// The gRPC wire contract (proto/) loaded at run time, with TypeScript shapes for its messages,
// typed client constructors and handler maps, and the message limits every server and client
// of ArrowQuant uses. Also the small server lifecycle (bind, graceful stop) shared by the
// coordinator's shard server and the workers' health server.

import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { packageRoot } from '../package-info.js';
import { GrpcListenError } from './errors.js';

/** Largest data chunk of an upload or download message (proto/arrowquant/v1/arrowquant.proto). */
export const MAX_CHUNK_BYTES = 1024 * 1024;
/** Largest gRPC message either end sends or accepts: a chunk plus its framing, with room to spare. */
export const MAX_MESSAGE_BYTES = 2 * 1024 * 1024;

/**
 * HTTP/2 flow-control window for streams and connections. The protocol's default, 64 KiB, lets a
 * sender have only that much in flight before waiting for the receiver: shards moved at about
 * 0.1 GB/s over loopback. With 16 MiB windows the same uploads run several times faster.
 */
export const FLOW_CONTROL_WINDOW = 16 << 20;

/** Largest HTTP/2 DATA frame a server accepts (the default 16 KiB means 64 frames per 1 MiB chunk). */
export const MAX_FRAME_BYTES = (1 << 24) - 1;

/** Message size limits (and the flow-control window) for every channel (client) and server. */
export const GRPC_MESSAGE_LIMITS = {
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  'grpc-node.flow_control_window': FLOW_CONTROL_WINDOW,
} as const satisfies grpc.ChannelOptions;

export const SHARD_TRANSFER_SERVICE = 'arrowquant.v1.ShardTransfer';
export const HEALTH_SERVICE = 'grpc.health.v1.Health';

// ---- message shapes (proto-loader with keepCase, longs: Number, enums: String, defaults, oneofs)

export interface ShardHeader {
  job_id: string;
  layer_index: number;
  plan_hash: string;
  size: number;
  sha256: string;
  worker_id: string;
  /** the worker's kernel and threads, and the layer's thread time (0 / "" from older workers) */
  kernel?: string;
  threads?: number;
  read_ms?: number;
  kernel_ms?: number;
  hash_ms?: number;
  write_ms?: number;
  /** where the data buffer lies in the shard (core/format/shard-digest.ts); 0 / 0 from a shard that does not decode */
  data_offset?: number;
  data_length?: number;
}

export type UploadShardRequest =
  | { header: ShardHeader; chunk?: undefined; part?: 'header' }
  | { chunk: Uint8Array; header?: undefined; part?: 'chunk' };

export interface UploadShardResponse {
  duplicate: boolean;
  received_bytes: number;
}

export interface DownloadTensorRequest {
  job_id: string;
  layer_index: number;
}

export interface DownloadTensorResponse {
  chunk: Uint8Array;
}

export type ServingStatus = 'UNKNOWN' | 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN';

export interface HealthCheckRequest {
  service: string;
}

export interface HealthCheckResponse {
  status: ServingStatus;
}

export interface HealthListResponse {
  statuses: Record<string, HealthCheckResponse>;
}

// ---- clients and handler maps

type Callback<T> = grpc.requestCallback<T>;

export interface ShardTransferClient extends grpc.Client {
  UploadShard(options: grpc.CallOptions, callback: Callback<UploadShardResponse>): grpc.ClientWritableStream<UploadShardRequest>;
  DownloadTensor(request: DownloadTensorRequest, options?: grpc.CallOptions): grpc.ClientReadableStream<DownloadTensorResponse>;
}

export interface HealthClient extends grpc.Client {
  Check(request: HealthCheckRequest, options: grpc.CallOptions, callback: Callback<HealthCheckResponse>): grpc.ClientUnaryCall;
  List(request: Record<string, never>, options: grpc.CallOptions, callback: Callback<HealthListResponse>): grpc.ClientUnaryCall;
  Watch(request: HealthCheckRequest, options?: grpc.CallOptions): grpc.ClientReadableStream<HealthCheckResponse>;
}

export interface ShardTransferHandlers extends grpc.UntypedServiceImplementation {
  UploadShard: grpc.handleClientStreamingCall<UploadShardRequest, UploadShardResponse>;
  DownloadTensor: grpc.handleServerStreamingCall<DownloadTensorRequest, DownloadTensorResponse>;
}

export interface HealthHandlers extends grpc.UntypedServiceImplementation {
  Check: grpc.handleUnaryCall<HealthCheckRequest, HealthCheckResponse>;
  List: grpc.handleUnaryCall<Record<string, never>, HealthListResponse>;
  Watch: grpc.handleServerStreamingCall<HealthCheckRequest, HealthCheckResponse>;
}

export type ClientConstructor<C> = new (address: string, credentials: grpc.ChannelCredentials, options?: grpc.ClientOptions) => C;

export interface GrpcServices {
  shardTransfer: { definition: grpc.ServiceDefinition; Client: ClientConstructor<ShardTransferClient> };
  health: { definition: grpc.ServiceDefinition; Client: ClientConstructor<HealthClient> };
  /** the coordinator service's job API (proto/arrowquant/v1/jobs.proto; typed in core/grpc/jobs-proto.ts) */
  jobs: { definition: grpc.ServiceDefinition; Client: ClientConstructor<grpc.Client> };
}

let services: GrpcServices | null = null;

/** The services of proto/, loaded once (from the package root, in source and in dist/). */
export function grpcServices(): GrpcServices {
  if (services) return services;
  const protoDir = join(packageRoot(), 'proto');
  const definition = protoLoader.loadSync(['arrowquant/v1/arrowquant.proto', 'arrowquant/v1/jobs.proto', 'grpc/health/v1/health.proto'], {
    includeDirs: [protoDir],
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const loaded = grpc.loadPackageDefinition(definition) as unknown as {
    arrowquant: { v1: { ShardTransfer: grpc.ServiceClientConstructor; Jobs: grpc.ServiceClientConstructor } };
    grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } };
  };
  const st = loaded.arrowquant.v1.ShardTransfer;
  const health = loaded.grpc.health.v1.Health;
  services = {
    shardTransfer: { definition: st.service, Client: st as unknown as ClientConstructor<ShardTransferClient> },
    health: { definition: health.service, Client: health as unknown as ClientConstructor<HealthClient> },
    jobs: { definition: loaded.arrowquant.v1.Jobs.service, Client: loaded.arrowquant.v1.Jobs },
  };
  return services;
}

// ---- server lifecycle

export function createGrpcServer(): grpc.Server {
  const server = new grpc.Server({ ...GRPC_MESSAGE_LIMITS });
  // grpc-js has no server option for the receive window (clients have
  // 'grpc-node.flow_control_window'): set the per-stream window in the HTTP/2 settings it passes to
  // node:http2, when that internal shape is there; bindServer widens each connection's window.
  const internal = server as unknown as { commonServerOptions?: { settings?: Record<string, unknown> } };
  if (internal.commonServerOptions) {
    internal.commonServerOptions.settings = { ...internal.commonServerOptions.settings, initialWindowSize: FLOW_CONTROL_WINDOW, maxFrameSize: MAX_FRAME_BYTES };
  }
  return server;
}

/** Widen the connection-level receive window of every HTTP/2 session the server accepts. */
function widenSessionWindows(server: grpc.Server): void {
  const internal = server as unknown as { http2Servers?: Map<{ on(ev: 'session', fn: (s: { setLocalWindowSize?(n: number): void }) => void): void }, unknown> };
  for (const h2 of internal.http2Servers?.keys() ?? []) {
    h2.on('session', (session) => {
      try {
        session.setLocalWindowSize?.(FLOW_CONTROL_WINDOW);
      } catch {
        /* the default window still works, only slower */
      }
    });
  }
}

/** Splits "host:port" (host may be a bracketed IPv6 address); port 0 lets the OS pick one. */
export function parseListenAddress(listen: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]\s]+):(\d{1,5})$/.exec(listen);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) {
    throw new GrpcListenError(`listen address "${listen}" is not host:port (e.g. 0.0.0.0:7070, [::]:7070, 127.0.0.1:0)`, listen);
  }
  return { host: m[1]!, port };
}

/** Binds `server` to "host:port"; resolves with the port actually bound. */
export function bindServer(server: grpc.Server, listen: string, credentials: grpc.ServerCredentials): Promise<{ port: number; address: string }> {
  const { host } = parseListenAddress(listen);
  return new Promise((resolve, reject) => {
    server.bindAsync(listen, credentials, (err, port) => {
      if (err) reject(new GrpcListenError(`cannot listen on ${listen}: ${err.message}`, listen, { cause: err }));
      else {
        widenSessionWindows(server);
        resolve({ port, address: `${host}:${port}` });
      }
    });
  });
}

/** Graceful shutdown (running calls may finish) for up to `graceMs`, then a forced one. */
export function stopServer(server: grpc.Server, graceMs: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
