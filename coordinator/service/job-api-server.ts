// The gRPC face of the coordinator service: the Jobs API (jobs.proto) behind bearer-token and/or
// TLS authentication, and the standard health service (unauthenticated, for probes). Requests are
// validated against jobs-proto.ts's bounds first; errors map to status codes once, here.

import { Metadata, status as Status, type Server, type ServiceError } from '@grpc/grpc-js';
import type { KV } from 'nats';
import type { z } from 'zod';
import { ArrowQuantError } from '../../core/errors.js';
import { decodeMessage, stagedLayerSchema, workerInfoSchema } from '../../core/cluster/messages.js';
import { layerKey } from '../../core/cluster/names.js';
import { HealthService } from '../../core/grpc/health.js';
import { bindServer, createGrpcServer, stopServer } from '../../core/grpc/proto.js';
import { serverCredentials, type ServerTlsOptions } from '../../core/grpc/tls.js';
import {
  JOBS_SERVICE, isFinalState, jobRefSchema, jobsService, submitRequestSchema, type JobsHandlers, type StagedLayerMessage, type WorkerMessage,
} from '../../core/grpc/jobs-proto.js';
import { checkBearer } from './bearer-auth.js';
import { JobQueue, OutputBusyError, ServiceStoppingError, UnknownJobError } from './job-queue.js';
import { toJobMessage, type JobRecord } from './job-store.js';

const fail = (code: Status, details: string): ServiceError => Object.assign(new Error(details), { code, details, metadata: new Metadata() });

/** The status a failure of the service maps to. */
export function toServiceError(e: unknown): ServiceError {
  if (e instanceof UnknownJobError) return fail(Status.NOT_FOUND, e.message);
  if (e instanceof OutputBusyError) return fail(Status.ALREADY_EXISTS, e.message);
  if (e instanceof ServiceStoppingError) return fail(Status.UNAVAILABLE, e.message);
  if (e instanceof ArrowQuantError && e.exitCode >= 2) return fail(Status.INVALID_ARGUMENT, e.message);
  if (e instanceof ArrowQuantError) return fail(Status.FAILED_PRECONDITION, e.message);
  return fail(Status.INTERNAL, `internal error: ${(e as Error)?.message ?? String(e)}`);
}

function parse<T>(schema: z.ZodType<T>, value: unknown, what: string): T {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const i = r.error.issues[0]!;
  throw fail(Status.INVALID_ARGUMENT, `${what}: ${i.path.join('.') || 'request'}: ${i.message}`);
}

export interface JobApiServerOptions {
  queue: JobQueue;
  token: string | null;
  tls: ServerTlsOptions | null;
  workers: KV;
  /** the cluster's job state (aq-jobs): staged layers of running jobs */
  clusterJobs: KV;
  /** how long Watch streams and calls get to finish on stop */
  graceMs: number;
}

export class JobApiServer {
  readonly health = new HealthService();
  private readonly server: Server = createGrpcServer();
  private readonly watches = new Set<() => void>();
  private started = false;

  constructor(private readonly o: JobApiServerOptions) {
    this.server.addService(jobsService().definition, this.handlers());
    this.health.addTo(this.server);
  }

  async start(listen: string): Promise<{ port: number; address: string }> {
    const bound = await bindServer(this.server, listen, serverCredentials(this.o.tls));
    this.started = true;
    this.health.setStatus('', 'SERVING');
    this.health.setStatus(JOBS_SERVICE, 'SERVING');
    return bound;
  }

  /** NOT_SERVING, Watch streams ended, then a graceful stop bounded by the grace. */
  async stop(): Promise<void> {
    this.health.shutdown();
    for (const end of [...this.watches]) end();
    if (this.started) await stopServer(this.server, this.o.graceMs);
    else this.server.forceShutdown();
    this.started = false;
  }

  private message(rec: JobRecord) {
    return toJobMessage(rec, this.o.queue.queuePosition(rec.job_id));
  }

  private handlers(): JobsHandlers {
    const { queue } = this.o;
    const guard = (metadata: Metadata, reply: (err: ServiceError) => void, body: () => Promise<void> | void): void => {
      const denied = checkBearer(this.o.token, metadata);
      if (denied) return reply(denied);
      Promise.resolve().then(body).catch((e: unknown) => reply(isServiceError(e) ? e : toServiceError(e)));
    };
    return {
      Submit: (call, cb) => guard(call.metadata, cb, async () => {
        const rec = await queue.submit(parse(submitRequestSchema, call.request, 'Submit'));
        cb(null, { job_id: rec.job_id });
      }),
      Get: (call, cb) => guard(call.metadata, cb, async () => {
        const rec = queue.get(parse(jobRefSchema, call.request, 'Get').job_id);
        cb(null, { ...this.message(rec), layers: rec.state === 'running' ? await this.stagedLayers(rec) : [] });
      }),
      Cancel: (call, cb) => guard(call.metadata, cb, async () => cb(null, this.message(await queue.cancel(parse(jobRefSchema, call.request, 'Cancel').job_id)))),
      List: (call, cb) => guard(call.metadata, cb, async () => cb(null, { jobs: queue.list().map((r) => this.message(r)), workers: await this.workers() })),
      Watch: (call) => guard(call.metadata, (err) => call.emit('error', err), () => {
        const id = parse(jobRefSchema, call.request, 'Watch').job_id;
        const send = (rec: JobRecord) => {
          if (call.cancelled || call.destroyed) return;
          const final = isFinalState(rec.state);
          call.write({ job: this.message(rec), final });
          if (final) end();
        };
        const unsubscribe = queue.watch(id, send);
        const end = () => {
          unsubscribe();
          this.watches.delete(end);
          if (!call.writableEnded) call.end();
        };
        this.watches.add(end);
        call.on('cancelled', end);
        call.on('error', end);
        send(queue.get(id));
      }),
    };
  }

  /** The layers of a running job staged so far, in layer order (the job driver's aq-jobs entries). */
  private async stagedLayers(rec: JobRecord): Promise<StagedLayerMessage[]> {
    const total = rec.progress?.layers_total ?? 0;
    const reads = Array.from({ length: total }, async (_, i): Promise<StagedLayerMessage | null> => {
      const e = await this.o.clusterJobs.get(layerKey(rec.cluster_job_id, i));
      if (!e || !e.value.length) return null;
      try {
        const l = decodeMessage(stagedLayerSchema, e.value, `aq-jobs entry ${layerKey(rec.cluster_job_id, i)}`);
        return { layer_index: i, bits: l.bits, cosine: l.cosine, worker: l.worker };
      } catch {
        return null;
      }
    });
    return (await Promise.all(reads)).filter((l): l is StagedLayerMessage => l !== null);
  }

  private async workers(): Promise<WorkerMessage[]> {
    const kv = this.o.workers;
    const keys: string[] = [];
    for await (const k of await kv.keys()) keys.push(k);
    const out: WorkerMessage[] = [];
    for (const k of keys) {
      const e = await kv.get(k);
      if (!e || !e.value.length) continue;
      try {
        const w = decodeMessage(workerInfoSchema, e.value, `worker entry ${k}`);
        out.push({ id: w.id, host: w.host, kernel: w.kernel, threads: w.threads, concurrency: w.concurrency, in_flight: w.in_flight, layers_done: w.layers_done, version: w.version });
      } catch {
        /* a malformed liveness entry is not a worker */
      }
    }
    return out.sort((a, b) => a.id.localeCompare(b.id));
  }
}

function isServiceError(e: unknown): e is ServiceError {
  return e instanceof Error && typeof (e as Partial<ServiceError>).code === 'number' && 'details' in e;
}
