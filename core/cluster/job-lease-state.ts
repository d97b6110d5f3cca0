// A coordinator holds its job through the job-state entry "<job>" in the aq-jobs bucket: it
// creates it (or takes it over by compare-and-set once the previous holder's lease has run out)
// and rewrites it every leaseMs/3. Workers and other coordinators read the entry's server
// timestamp: a running job whose entry is older than its lease has no live coordinator.
// (Assumes the hosts' clocks agree to well within a lease, as NTP gives.)

import type { KvEntry } from 'nats';
import { decodeMessage, jobStateSchema, type JobState } from './messages.js';

export const DEFAULT_LEASE_MS = 15_000;

export function leaseMs(env: NodeJS.ProcessEnv = process.env): number {
  const v = Number(env.ARROW_QUANT_JOB_LEASE_MS);
  return Number.isFinite(v) && v >= 500 ? v : DEFAULT_LEASE_MS;
}

export interface HeldJob {
  state: JobState;
  /** ms since the holder last renewed the lease */
  ageMs: number;
  /** a running job whose lease is still valid */
  live: boolean;
  revision: number;
}

/** The job state in a KV entry (null for none, a deleted entry or one that does not parse). */
export function heldJob(e: KvEntry | null, now = Date.now()): HeldJob | null {
  if (!e || e.operation !== 'PUT' || !e.value.length) return null;
  let state: JobState;
  try {
    state = decodeMessage(jobStateSchema, e.value, `job state ${e.key}`);
  } catch {
    return null;
  }
  const ageMs = Math.max(0, now - e.created.getTime());
  const live = state.state === 'running' && ageMs < (state.lease_ms ?? DEFAULT_LEASE_MS);
  return { state, ageMs, live, revision: e.revision };
}
