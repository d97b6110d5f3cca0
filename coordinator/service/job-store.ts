// The coordinator service's job records in a JetStream key-value bucket of their own, one per
// service name (the cluster's aq-jobs bucket belongs to runClusterJob): one entry per job, keyed by job id, holding the request,
// the state and the result. A restarted coordinator reads them back and resumes what was queued
// or running.

import type { KV, NatsConnection } from 'nats';
import { z } from 'zod';
import { JOB_STATES, type JobMessage } from '../../core/grpc/jobs-proto.js';
import { decodeMessage, encodeMessage } from '../../core/cluster/messages.js';

/** One bucket per coordinator service name: services of different names on one NATS never see each other's jobs. */
export const serviceJobsBucket = (name: string) => `aq-coordinator-${name}`;
export const SERVICE_NAME_PATTERN = /^[A-Za-z0-9_-]{1,32}$/;

const progressSchema = z.object({
  layers_done: z.number().int().min(0),
  layers_total: z.number().int().min(0),
  bytes_done: z.number().min(0),
  bytes_total: z.number().min(0),
});

export const jobRecordSchema = z.object({
  job_id: z.string(),
  /** submission order: queued jobs run in this order */
  seq: z.number().int().min(0),
  state: z.enum(JOB_STATES),
  /** the model's real path (checked under a model root at submission) */
  model: z.string(),
  /** the output's absolute path (checked under the output root at submission) */
  output: z.string(),
  config_json: z.string(),
  progress: progressSchema.nullable(),
  result: z.object({ exit_code: z.number().int(), message: z.string(), summary_json: z.string() }).nullable(),
  submitted_at: z.string(),
  started_at: z.string(),
  finished_at: z.string(),
  cluster_job_id: z.string(),
  message: z.string(),
});
export type JobRecord = z.infer<typeof jobRecordSchema>;

export class JobStore {
  private constructor(private readonly kv: KV, readonly bucket: string) {}

  static async open(nc: NatsConnection, serviceName: string): Promise<JobStore> {
    const bucket = serviceJobsBucket(serviceName);
    return new JobStore(await nc.jetstream().views.kv(bucket, { history: 1 }), bucket);
  }

  async delete(jobId: string): Promise<void> {
    await this.kv.delete(jobId);
  }

  async put(rec: JobRecord): Promise<void> {
    await this.kv.put(rec.job_id, encodeMessage(rec));
  }

  /** Every record, in submission order. Keys first, then reads (see cli/commands/status.ts allKeys). */
  async all(log: (l: string) => void): Promise<JobRecord[]> {
    const keys: string[] = [];
    for await (const k of await this.kv.keys()) keys.push(k);
    const out: JobRecord[] = [];
    for (const k of keys) {
      const e = await this.kv.get(k);
      if (!e || !e.value.length) continue;
      try {
        out.push(decodeMessage(jobRecordSchema, e.value, `${this.bucket} entry ${k}`));
      } catch (err) {
        log(`ignoring a job record that cannot be read: ${(err as Error).message}`);
      }
    }
    return out.sort((a, b) => a.seq - b.seq);
  }
}

/** The wire form of a record (queue position filled in by the caller). */
export function toJobMessage(r: JobRecord, queuePosition = 0): JobMessage {
  return {
    job_id: r.job_id, state: r.state, model: r.model, output: r.output, config_json: r.config_json,
    progress: r.progress, result: r.result, submitted_at: r.submitted_at, started_at: r.started_at,
    finished_at: r.finished_at, cluster_job_id: r.cluster_job_id, queue_position: queuePosition, message: r.message,
  };
}
