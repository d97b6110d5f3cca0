// Messages on NATS, validated with zod at the edge: a malformed or crafted message is refused
// with a message that says what was wrong, never half-processed.

import { z } from 'zod';
import { layerTaskSchema } from '../job/layer-task.js';
import { MalformedMessageError } from './errors.js';
import { jobIdSchema } from './job-id.js';

/** A run id: this run of a coordinator (random hex). */
export const runIdSchema = z.string().regex(/^[0-9a-f]{8,64}$/, 'a run id is 8-64 lowercase hex digits');
/** Free text in an event (names, reasons, error messages) is cut to this many characters before publishing. */
export const MAX_EVENT_TEXT = 4096;
const eventText = z.string().max(MAX_EVENT_TEXT * 2);

export const taskMessageSchema = z
  .object({
    task: layerTaskSchema,
    /** this run of the coordinator: a cancelled run's tasks are dropped, a later run of the same job is not */
    run_id: runIdSchema,
    /** where the coordinator of this job serves ShardTransfer (host:port) */
    coordinator: z.string().regex(/^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/),
    /** the coordinator serves TLS: workers must connect with TLS */
    tls: z.boolean(),
    /** a worker that cannot read the file under its model roots may download the tensor over gRPC */
    allow_download: z.boolean(),
  })
  .strict();
export type TaskMessage = z.infer<typeof taskMessageSchema>;

const serializedError = z.object({ name: eventText, message: eventText, fields: z.record(z.string(), z.unknown()) });

export const workerEventSchema = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('layer_failed'),
    job_id: jobIdSchema,
    layer_index: z.number().int().min(0),
    name: eventText,
    worker_id: eventText,
    /** the failure is a property of the input (bad weights, a quality bar): retrying cannot help */
    final: z.boolean(),
    error: serializedError,
  }),
  z.object({
    type: z.literal('task_refused'),
    job_id: jobIdSchema,
    layer_index: z.number().int().min(0),
    name: eventText,
    worker_id: eventText,
    reason: eventText,
  }),
]);
export type WorkerEvent = z.infer<typeof workerEventSchema>;

/** Without run_id: a request to the job's coordinator (`arrowquant cancel`); with it: the coordinator telling workers. */
export const cancelMessageSchema = z.object({ run_id: runIdSchema.optional() }).strict();


export const workerInfoSchema = z.object({
  id: z.string(),
  host: z.string(),
  pid: z.number().int(),
  version: z.string(),
  kernel: z.string(),
  threads: z.number().int(),
  concurrency: z.number().int(),
  in_flight: z.number().int(),
  layers_done: z.number().int(),
  model_roots: z.array(z.string()),
  started_at: z.string(),
});
export type WorkerInfo = z.infer<typeof workerInfoSchema>;

export const jobStateSchema = z.object({
  job_id: jobIdSchema,
  model: z.string(),
  output: z.string(),
  layers_total: z.number().int(),
  state: z.enum(['running', 'done', 'failed', 'cancelled']),
  coordinator: z.string(),
  message: z.string().optional(),
  /** the run holding the job, its process ("host pid N") and how long its lease lasts unrenewed */
  run_id: z.string().optional(),
  holder: z.string().optional(),
  lease_ms: z.number().int().positive().optional(),
});
export type JobState = z.infer<typeof jobStateSchema>;

export const stagedLayerSchema = z.object({
  sha256: z.string(),
  size: z.number().int(),
  bits: z.number().int(),
  cosine: z.number(),
  worker: z.string(),
  /** where the layer's record batch message starts in the job's partial output, when it was written there directly */
  output_offset: z.number().int().min(0).optional(),
});
export type StagedLayer = z.infer<typeof stagedLayerSchema>;

/** Parse JSON bytes with a schema; the error names the subject, the field and what is wrong. */
export function decodeMessage<T>(schema: z.ZodType<T>, data: Uint8Array, subject: string): T {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder().decode(data));
  } catch (e) {
    throw new MalformedMessageError(`message on ${subject}: not valid JSON (${(e as Error).message})`, subject);
  }
  const r = schema.safeParse(json);
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw new MalformedMessageError(`message on ${subject}: ${i.path.join('.') || 'message'}: ${i.message}`, subject);
  }
  return r.data;
}

export function encodeMessage(value: unknown): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(value));
}
