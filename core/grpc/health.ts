// The standard gRPC health service (grpc.health.v1.Health): Check, List and Watch over a
// settable status per service name, "" being the server as a whole. Check of a service never
// set answers NOT_FOUND; Watch of one sends SERVICE_UNKNOWN and waits for it to appear, as
// https://github.com/grpc/grpc/blob/master/doc/health-checking.md says. Used inside the
// coordinator's shard server, and alone (HealthServer) on the workers' probe port.

import { status as Status, type Server, type ServerWritableStream } from '@grpc/grpc-js';
import { bindServer, createGrpcServer, grpcServices, stopServer, type HealthCheckRequest, type HealthCheckResponse, type HealthHandlers, type ServingStatus } from './proto.js';
import { serverCredentials, type ServerTlsOptions } from './tls.js';
import type { H2GrpcServer } from './h2-server.js';

type Watcher = ServerWritableStream<HealthCheckRequest, HealthCheckResponse>;

export class HealthService {
  private readonly statuses = new Map<string, ServingStatus>();
  private readonly watchers = new Map<string, Set<Watcher>>();
  private shutDown = false;

  /** Sets (and announces to watchers) the status of `service`; "" is the whole server. */
  setStatus(service: string, status: ServingStatus): void {
    if (this.shutDown) return;
    this.update(service, status);
  }

  status(service: string): ServingStatus | undefined {
    return this.statuses.get(service);
  }

  /**
   * The server is going away: every service becomes NOT_SERVING (watchers are told), later
   * updates are ignored, and Watch streams are ended so that a graceful shutdown can finish.
   */
  shutdown(): void {
    if (this.shutDown) return;
    for (const service of this.statuses.keys()) this.update(service, 'NOT_SERVING');
    this.shutDown = true;
    for (const set of this.watchers.values()) for (const w of set) w.end();
    this.watchers.clear();
  }

  /** Registers the Health service on `server` (grpc-js's, or the shard server's H2GrpcServer). */
  addTo(server: Pick<Server, 'addService'> | H2GrpcServer): void {
    server.addService(grpcServices().health.definition, this.handlers());
  }

  handlers(): HealthHandlers {
    return {
      Check: (call, callback) => {
        const status = this.statuses.get(call.request.service);
        if (status === undefined) callback({ code: Status.NOT_FOUND, details: `unknown service "${call.request.service}"` });
        else callback(null, { status });
      },
      List: (_call, callback) => {
        callback(null, { statuses: Object.fromEntries([...this.statuses].map(([name, status]) => [name, { status }])) });
      },
      Watch: (call) => {
        const service = call.request.service;
        if (this.shutDown) {
          call.write({ status: this.statuses.get(service) ?? 'SERVICE_UNKNOWN' });
          call.end();
          return;
        }
        let set = this.watchers.get(service);
        if (!set) this.watchers.set(service, (set = new Set()));
        set.add(call);
        const forget = () => {
          set.delete(call);
          if (set.size === 0 && this.watchers.get(service) === set) this.watchers.delete(service);
        };
        call.on('cancelled', forget);
        call.on('close', forget);
        call.on('error', forget);
        call.write({ status: this.statuses.get(service) ?? 'SERVICE_UNKNOWN' });
      },
    };
  }

  private update(service: string, status: ServingStatus): void {
    if (this.statuses.get(service) === status) return;
    this.statuses.set(service, status);
    this.notify(service, status);
  }

  private notify(service: string, status: ServingStatus): void {
    for (const w of this.watchers.get(service) ?? []) if (!w.cancelled) w.write({ status });
  }
}

/** A server with only the Health service: the workers' probe port. */
export class HealthServer {
  readonly health = new HealthService();
  private readonly server: Server = createGrpcServer();
  private started = false;

  constructor(private readonly options: { tls?: ServerTlsOptions | null } = {}) {
    this.health.addTo(this.server);
  }

  /** Listens on "host:port" (port 0: the OS picks one); "" becomes SERVING. */
  async start(listen: string): Promise<{ port: number; address: string }> {
    const bound = await bindServer(this.server, listen, serverCredentials(this.options.tls));
    this.started = true;
    this.health.setStatus('', 'SERVING');
    return bound;
  }

  async stop(graceMs = 2000): Promise<void> {
    this.health.shutdown();
    if (this.started) await stopServer(this.server, graceMs);
    else this.server.forceShutdown();
    this.started = false;
  }
}
