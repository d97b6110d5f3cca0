// Names on NATS shared by coordinators and workers (distributed.md's control plane). Every name
// built from a job id checks its syntax: no id turns into another subject, key or path.

import { checkJobId } from './job-id.js';

const id = (jobId: string) => checkJobId(jobId, 'job id');

/** Work-queue stream of layer tasks, one subject per job: aq.tasks.<job>. */
export const TASK_STREAM = 'AQ_TASKS';
export const taskSubject = (jobId: string) => `aq.tasks.${id(jobId)}`;
/** The one durable pull consumer all workers share (a work-queue stream allows one unfiltered consumer). */
export const WORKER_CONSUMER = 'aq-workers';
/** Key-value bucket of job state: "<job>" and "<job>.layer.<index>". */
export const JOBS_BUCKET = 'aq-jobs';
export const layerKey = (jobId: string, index: number) => `${id(jobId)}.layer.${index}`;
/** A final refusal or failure of a layer, recorded by the worker before it tells the coordinator. */
export const refusalKey = (jobId: string, index: number) => `${id(jobId)}.refused.${index}`;
export const refusalKeys = (jobId: string) => `${id(jobId)}.refused.*`;
/** A layer's last failure that was to be retried (the worker's event), so that exhausted deliveries can say why. */
export const failureKey = (jobId: string, index: number) => `${id(jobId)}.failed.${index}`;
export const failureKeys = (jobId: string) => `${id(jobId)}.failed.*`;
/** Key-value bucket of worker liveness and capabilities, entries expire when a worker stops. */
export const WORKERS_BUCKET = 'aq-workers';
/** Worker → coordinator: failures and refusals of a job's layers. */
export const eventsSubject = (jobId: string) => `aq.events.${id(jobId)}`;
/** Anyone → workers and coordinator: cancel a job. */
export const cancelSubject = (jobId: string) => `aq.cancel.${id(jobId)}`;
export const CANCEL_ALL = 'aq.cancel.*';
/** De-duplication id of a task message. */
export const taskMessageId = (jobId: string, layerIndex: number, planHash: string) => `${id(jobId)}/${layerIndex}/${planHash}`;
export const maxDeliveriesAdvisory = `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.${TASK_STREAM}.${WORKER_CONSUMER}`;
/** Measure tasks of a job (allocation_strategy: measured) share the task stream: aq.tasks.<job>.measure. */
export const measureSubject = (jobId: string) => `aq.tasks.${id(jobId)}.measure`;
export const isMeasureSubject = (subject: string) => subject.startsWith('aq.tasks.') && subject.endsWith('.measure');
/** A worker's measurement result: "<job>.measure.<layer>.<v1|v2>.<group size>" in aq-jobs. */
export const measureKey = (jobId: string, layer: number, encoding: string, groupSize: number) => `${id(jobId)}.measure.${layer}.${encoding}.${groupSize}`;
export const measureKeys = (jobId: string) => `${id(jobId)}.measure.>`;
/** De-duplication id of a measure task: one per run (a run that holds the job republishes what it still needs). */
export const measureMessageId = (jobId: string, layer: number, measureId: string, runId: string) => `${id(jobId)}/measure/${layer}/${measureId}/${runId}`;
