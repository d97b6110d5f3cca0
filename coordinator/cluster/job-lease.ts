// The coordinator's exclusive claim on a job: the job-state entry is created, or taken over by
// compare-and-set when the previous holder's lease ran out, and renewed every lease/3 with
// compare-and-set too, so two coordinators can never both believe they hold a job.

import { hostname } from 'node:os';
import type { KV } from 'nats';
import { JobHeldError } from '../../core/cluster/errors.js';
import { encodeMessage, type JobState } from '../../core/cluster/messages.js';
import { heldJob, leaseMs, type HeldJob } from '../../core/cluster/job-lease-state.js';

export class JobLease {
  private timer: NodeJS.Timeout | null = null;
  private writing: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly kv: KV,
    private state: JobState,
    private revision: number,
    /** what the job state held before this claim (a dead run's), if anything */
    readonly previous: HeldJob | null,
    private readonly onLost: (e: Error) => void,
  ) {}

  /** Claims `state.job_id` for `runId`; JobHeldError (exit 2) when a live coordinator holds it. */
  static async claim(kv: KV, base: Omit<JobState, 'run_id' | 'holder' | 'lease_ms'>, runId: string, onLost: (e: Error) => void): Promise<JobLease> {
    const state: JobState = { ...base, run_id: runId, holder: `${hostname()} pid ${process.pid}`, lease_ms: leaseMs() };
    const key = base.job_id;
    for (let attempt = 0; attempt < 3; attempt++) {
      const previous = heldJob(await kv.get(key));
      if (previous?.live && !holderIsDead(previous)) throw held(key, previous);
      try {
        const revision = previous ? await kv.update(key, encodeMessage(state), previous.revision) : await kv.create(key, encodeMessage(state));
        const lease = new JobLease(kv, state, revision, previous, onLost);
        lease.timer = setInterval(() => void lease.renew(), Math.max(100, state.lease_ms! / 3));
        return lease;
      } catch {
        // someone wrote the entry between our read and our write: read again
      }
    }
    const now = heldJob(await kv.get(key));
    throw now ? held(key, now) : new JobHeldError(`job ${key}: could not claim its job state (it changed under us three times)`, key, 'unknown');
  }

  /** Rewrites the state (e.g. the advertised address), which also renews the lease. */
  update(patch: Partial<JobState>): Promise<void> {
    this.state = { ...this.state, ...patch };
    return this.write();
  }

  /** Records the outcome and stops renewing; a finished job no longer holds anything. */
  async finish(state: JobState['state'], message?: string): Promise<void> {
    this.stop();
    this.state = { ...this.state, state, coordinator: state === 'done' ? this.state.coordinator : '', ...(message ? { message } : {}) };
    await this.write();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private renew(): void {
    void this.write().catch(() => undefined);
  }

  private write(): Promise<void> {
    const next = this.writing.then(async () => {
      try {
        this.revision = await this.kv.update(this.state.job_id, encodeMessage(this.state), this.revision);
      } catch (e) {
        const now = heldJob(await this.kv.get(this.state.job_id).catch(() => null));
        if (now && now.state.run_id !== this.state.run_id) {
          this.stop();
          const err = held(this.state.job_id, now);
          this.onLost(err);
          throw err;
        }
        // Our own write whose answer was lost (a NATS restart): continue from its revision.
        if (now) this.revision = await this.kv.update(this.state.job_id, encodeMessage(this.state), now.revision);
        else throw e; // NATS unreachable: the next renewal tries again
      }
    });
    this.writing = next.catch(() => undefined);
    return next;
  }
}

/** A holder on this host whose process is gone (killed): its lease need not run out first. */
function holderIsDead(h: HeldJob): boolean {
  const m = /^(.*) pid (\d+)$/.exec(h.state.holder ?? '');
  if (!m || m[1] !== hostname() || Number(m[2]) === process.pid) return false;
  try {
    process.kill(Number(m[2]), 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

function held(jobId: string, h: HeldJob): JobHeldError {
  const who = `${h.state.holder ?? 'a coordinator'}${h.state.coordinator ? ` at ${h.state.coordinator}` : ''}`;
  return new JobHeldError(
    `job ${jobId} is held by ${who} (run ${h.state.run_id ?? '?'}, writing ${h.state.output}); its lease was renewed ${(h.ageMs / 1000).toFixed(1)} s ago. ` +
      `Wait for it to finish, or stop it (arrowquant cancel ${jobId})`,
    jobId,
    who,
  );
}
