// The job API of proto/arrowquant/v1/jobs.proto: message shapes (proto-loader keepCase, longs as
// numbers, defaults), the typed client and handler map, and the bounds every request is checked
// against on the server before anything else reads it.

import type * as grpc from '@grpc/grpc-js';
import { z } from 'zod';
import { grpcServices, type ClientConstructor } from './proto.js';

export const JOBS_SERVICE = 'arrowquant.v1.Jobs';

/** Longest model or output path accepted (Linux PATH_MAX). */
export const MAX_PATH_CHARS = 4096;
/** Longest configuration JSON accepted. */
export const MAX_CONFIG_JSON_CHARS = 64 * 1024;

export const JOB_STATES = ['queued', 'running', 'done', 'failed', 'cancelled'] as const;
export type JobStateName = (typeof JOB_STATES)[number];
export const isFinalState = (s: string): boolean => s === 'done' || s === 'failed' || s === 'cancelled';

export const jobIdSchema = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'a job id is 1..64 characters [A-Za-z0-9_-]');

export const submitRequestSchema = z.object({
  model: z.string().min(1, 'model is empty').max(MAX_PATH_CHARS, `model is longer than ${MAX_PATH_CHARS} characters`),
  output: z.string().min(1, 'output is empty').max(MAX_PATH_CHARS, `output is longer than ${MAX_PATH_CHARS} characters`),
  config_json: z.string().max(MAX_CONFIG_JSON_CHARS, `config_json is longer than ${MAX_CONFIG_JSON_CHARS} characters`),
});
export type SubmitRequest = z.infer<typeof submitRequestSchema>;

export const jobRefSchema = z.object({ job_id: jobIdSchema });
export type JobRef = z.infer<typeof jobRefSchema>;

export interface SubmitResponse {
  job_id: string;
}

export interface JobProgress {
  layers_done: number;
  layers_total: number;
  bytes_done: number;
  bytes_total: number;
}

export interface JobResult {
  exit_code: number;
  message: string;
  summary_json: string;
}

export interface JobMessage {
  job_id: string;
  state: JobStateName;
  model: string;
  output: string;
  config_json: string;
  progress: JobProgress | null;
  result: JobResult | null;
  submitted_at: string;
  started_at: string;
  finished_at: string;
  cluster_job_id: string;
  queue_position: number;
  message: string;
  /** Get of a running job: the layers staged so far */
  layers?: StagedLayerMessage[];
}

export interface StagedLayerMessage {
  layer_index: number;
  bits: number;
  cosine: number;
  worker: string;
}

export interface JobEvent {
  job: JobMessage;
  final: boolean;
}

export interface WorkerMessage {
  id: string;
  host: string;
  kernel: string;
  threads: number;
  concurrency: number;
  in_flight: number;
  layers_done: number;
  version: string;
}

export interface ListResponse {
  jobs: JobMessage[];
  workers: WorkerMessage[];
}

type Callback<T> = grpc.requestCallback<T>;

export interface JobsClient extends grpc.Client {
  Submit(request: SubmitRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: Callback<SubmitResponse>): grpc.ClientUnaryCall;
  Watch(request: JobRef, metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientReadableStream<JobEvent>;
  Get(request: JobRef, metadata: grpc.Metadata, options: grpc.CallOptions, callback: Callback<JobMessage>): grpc.ClientUnaryCall;
  List(request: Record<string, never>, metadata: grpc.Metadata, options: grpc.CallOptions, callback: Callback<ListResponse>): grpc.ClientUnaryCall;
  Cancel(request: JobRef, metadata: grpc.Metadata, options: grpc.CallOptions, callback: Callback<JobMessage>): grpc.ClientUnaryCall;
}

export interface JobsHandlers extends grpc.UntypedServiceImplementation {
  Submit: grpc.handleUnaryCall<SubmitRequest, SubmitResponse>;
  Watch: grpc.handleServerStreamingCall<JobRef, JobEvent>;
  Get: grpc.handleUnaryCall<JobRef, JobMessage>;
  List: grpc.handleUnaryCall<Record<string, never>, ListResponse>;
  Cancel: grpc.handleUnaryCall<JobRef, JobMessage>;
}

export function jobsService(): { definition: grpc.ServiceDefinition; Client: ClientConstructor<JobsClient> } {
  const { definition, Client } = grpcServices().jobs;
  return { definition, Client: Client as unknown as ClientConstructor<JobsClient> };
}
