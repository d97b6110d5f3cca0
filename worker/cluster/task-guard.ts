// What a worker checks before it acts on a task from NATS. Publish rights on the task stream
// must not equal reading the model roots or sending data anywhere: the worker's own
// configuration decides the transport and which coordinators it talks to, and a task's numbers
// must agree with each other before anything is allocated or downloaded.

import { BlockList, isIP } from 'node:net';
import { TaskRefusedError } from '../../core/cluster/errors.js';
import { MAX_EVENT_TEXT, type WorkerEvent } from '../../core/cluster/messages.js';
import { isJobId } from '../../core/cluster/job-id.js';
import type { LayerTask } from '../../core/job/layer-task.js';
import { dtypeSize } from '../../core/quant/dtype.js';
import type { ClientTlsOptions } from '../../core/grpc/tls.js';

/** Hosts a worker without TLS uploads to unless the operator allows others. */
export const LOOPBACK_HOSTS = ['localhost', '127.0.0.1', '::1'];

export interface CoordinatorTrust {
  /** the worker's gRPC TLS; null = plaintext */
  tls: ClientTlsOptions | null;
  /**
   * Coordinator hosts allowed (exact names or addresses, "*.suffix" for a domain, a CIDR subnet such
   * as "10.0.0.0/8", or "*" for any host). Without TLS
   * it defaults to loopback; with TLS, absent means any host whose certificate the CA verifies.
   */
  allow?: string[];
}

/** host of "host:port" or "[v6]:port". */
export function hostOf(address: string): string {
  const m = /^\[([^\]]+)\]:\d+$/.exec(address) ?? /^([^:]+):\d+$/.exec(address);
  return (m?.[1] ?? address).toLowerCase();
}

/** An allow-list entry "a.b.c.d/n" or "v6::/n" as a subnet, else null. */
function subnetOf(entry: string): BlockList | null {
  const m = /^(.+)\/(\d{1,3})$/.exec(entry);
  const family = m ? isIP(m[1]!) : 0;
  if (!m || family === 0 || Number(m[2]) > (family === 4 ? 32 : 128)) return null;
  const list = new BlockList();
  list.addSubnet(m[1]!, Number(m[2]), family === 4 ? 'ipv4' : 'ipv6');
  return list;
}

function hostAllowed(host: string, allow: string[]): boolean {
  return allow.some((a) => {
    const p = a.toLowerCase();
    if (p === '*') return true; // the operator's explicit choice: any coordinator host
    if (p.startsWith('*.')) return host.endsWith(p.slice(1)) && isIP(host) === 0;
    if (host.startsWith('127.') && p === '127.0.0.1') return isIP(host) === 4; // all of 127/8 is loopback
    const subnet = subnetOf(p);
    if (subnet) return isIP(host) !== 0 && subnet.check(host, isIP(host) === 4 ? 'ipv4' : 'ipv6');
    return host === p;
  });
}

/** Throws TaskRefusedError when this worker may not send a shard (or ask for a tensor) to `address`. */
export function checkCoordinator(address: string, trust: CoordinatorTrust, tag: string, worker: string, layer: string): void {
  const host = hostOf(address);
  const allow = trust.allow ?? (trust.tls ? null : LOOPBACK_HOSTS);
  if (allow && !hostAllowed(host, allow)) {
    throw new TaskRefusedError(
      `worker ${worker} refused ${tag}: coordinator ${address} is not an allowed coordinator host (${allow.join(', ')}; see --allow-coordinator)`,
      layer, worker,
    );
  }
}

/** The task's shape, dtype and byte length agree, before a byte is read or downloaded. */
export function checkTaskSize(task: LayerTask, tag: string, worker: string): void {
  let elements = 1;
  for (const d of task.shape) elements *= d;
  const expected = elements * dtypeSize(task.dtype);
  if (!Number.isSafeInteger(expected) || expected !== task.byte_length) {
    throw new TaskRefusedError(
      `worker ${worker} refused ${tag}: shape [${task.shape.join(', ')}] × ${task.dtype} is ${expected} bytes but the task says byte_length ${task.byte_length}`,
      task.name, worker,
    );
  }
}

const cut = (s: string) => (s.length > MAX_EVENT_TEXT ? `${s.slice(0, MAX_EVENT_TEXT)}… (${s.length - MAX_EVENT_TEXT} more characters)` : s);

/** An event with its free text cut: whatever a task names, the event fits in a NATS message. */
export function boundEvent(e: WorkerEvent): WorkerEvent {
  const base = { ...e, name: cut(e.name), worker_id: cut(e.worker_id) };
  if (base.type === 'task_refused') return { ...base, reason: cut(base.reason) };
  const fields = JSON.stringify(base.error.fields).length > MAX_EVENT_TEXT ? {} : base.error.fields;
  return { ...base, error: { name: cut(base.error.name), message: cut(base.error.message), fields } };
}

/**
 * The job and layer of a task message that failed validation, when they can be read, so that
 * its refusal reaches the job's coordinator instead of leaving the job waiting.
 */
export function taskIdentity(data: Uint8Array): { job_id: string; layer_index: number; name: string } | null {
  try {
    const t = (JSON.parse(new TextDecoder().decode(data)) as { task?: { job_id?: unknown; layer_index?: unknown; name?: unknown } })?.task;
    if (!t || !isJobId(t.job_id) || !Number.isSafeInteger(t.layer_index) || (t.layer_index as number) < 0) return null;
    return { job_id: t.job_id, layer_index: t.layer_index as number, name: typeof t.name === 'string' ? t.name : '' };
  } catch {
    return null;
  }
}
