// Seeded malformed task messages for the worker fuzz test. Every message carries at least one
// defect that must make a worker refuse or drop it without quantizing or uploading anything;
// `kind` says which defects, for the test's report.

import { seededRandom } from '../../core/model/random.js';
import type { TaskMessage } from '../../core/cluster/messages.js';

export interface FuzzTargets {
  /** a valid task of a job the test holds, whose coordinator address serves nothing */
  held: TaskMessage;
  /** a job the test holds whose coordinator is not an allowed host */
  remoteJobId: string;
  /** a FIFO under the worker's model root */
  fifo: string;
}

export interface FuzzMessage {
  subject: string;
  data: Uint8Array;
  kinds: string[];
}

type Json = Record<string, unknown>;
type Defect = (m: Json, t: Json, r: () => number) => void;

const pick = <T>(xs: readonly T[], r: () => number): T => xs[Math.floor(r() * xs.length)]!;

const BAD_IDS = ['../pwned', 'a.b', 'x*', '', 'a'.repeat(65), 'a b', '>', 'job/../../etc', 'ünïcode', '$JS'];

const DEFECTS: Record<string, Defect> = {
  missing_key: (m, t, r) => {
    if (r() < 0.5) delete m[pick(Object.keys(m), r)];
    else delete t[pick(Object.keys(t), r)];
  },
  wrong_type: (m, t, r) => {
    const v = pick([{ bogus: [1] }, -1], r);
    if (r() < 0.3) m[pick(['task', 'run_id', 'coordinator', 'tls', 'allow_download'], r)] = v;
    else t[pick(Object.keys(t), r)] = v;
  },
  bad_job_id: (_m, t, r) => (t.job_id = pick(BAD_IDS, r)),
  too_many_dims: (_m, t, r) => (t.shape = Array.from({ length: 65 + Math.floor(r() * 100) }, () => 1)),
  huge_name: (_m, t, r) => (t.name = 'n'.repeat(65_537 + Math.floor(r() * 800_000))),
  lying_size: (_m, t, r) => {
    t.shape = pick([[2 ** 31, 2 ** 31], [2 ** 53 - 1, 2], [1, 7]], r);
    t.byte_length = 128;
  },
  outside_root: (_m, t, r) => (t.file = pick(['/etc/passwd', '/proc/self/environ', '/dev/zero'], r)),
  not_held: (_m, t, r) => (t.job_id = `nobody${Math.floor(r() * 1e9)}`),
  extra_key: (m, t, r) => ((r() < 0.5 ? m : t)[`x${Math.floor(r() * 100)}`] = 1),
  wrong_tensor: (_m, t, r) => (t.name = `model.layers.${Math.floor(r() * 99)}.not_a_tensor`),
  shifted_range: (_m, t) => (t.data_start = (t.data_start as number) + 2),
  bad_run_id: (m, _t, r) => (m.run_id = pick(['', 'RUN', 'z'.repeat(65), 'not hex'], r)),
  bad_bits: (_m, t, r) => (t.bits = pick([0, 1, 3, 5, 32, 2.5], r)),
  bad_address: (m, _t, r) => (m.coordinator = pick(['', 'host', 'a b:1', 'x:999999', 'http://x:1'], r)),
};

export function fuzzTaskMessages(targets: FuzzTargets, count: number, seed: number): FuzzMessage[] {
  const r = seededRandom(seed);
  const out: FuzzMessage[] = [];
  const names = Object.keys(DEFECTS);
  for (let i = 0; i < count; i++) {
    const roll = r();
    if (roll < 0.05) {
      const bytes = new Uint8Array(1 + Math.floor(r() * 512)).map(() => Math.floor(r() * 256));
      out.push({ subject: `aq.tasks.fuzz`, data: bytes, kinds: ['not_json'] });
      continue;
    }
    if (roll < 0.08) {
      out.push({ subject: `aq.tasks.fuzz`, data: new TextEncoder().encode(JSON.stringify(pick([null, 1, 'x', [], [{}], true], r))), kinds: ['not_an_object'] });
      continue;
    }
    const m = structuredClone(targets.held) as unknown as Json;
    const t = m.task as Json;
    const kinds: string[] = [];
    if (roll < 0.12) {
      t.file = targets.fifo;
      kinds.push('fifo');
    } else if (roll < 0.16) {
      t.job_id = targets.remoteJobId;
      kinds.push('remote_coordinator');
    }
    const n = kinds.length ? Math.floor(r() * 2) : 1 + Math.floor(r() * 3);
    for (let k = 0; k < n; k++) {
      const name = pick(names, r);
      DEFECTS[name]!(m, t, r);
      kinds.push(name);
    }
    out.push({ subject: `aq.tasks.fuzz`, data: new TextEncoder().encode(JSON.stringify(m)), kinds });
  }
  return out;
}
