// Waits that must end: NATS calls during shutdown can hang while the server is unreachable
// (reconnects are unlimited), so a stopping process bounds each of them.

import type { NatsConnection } from 'nats';

/** Resolves when `p` settles or after `ms`, whichever is first; true when `p` fulfilled in time. */
export async function bounded(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((r) => (timer = setTimeout(() => r(false), ms)));
  try {
    return await Promise.race([p.then(() => true, () => false), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Drain (flush what is pending) for at most `ms`, then close whatever state the connection is in. */
export async function closeNats(nc: NatsConnection, ms = 3_000): Promise<void> {
  if (nc.isClosed()) return;
  await bounded(nc.drain(), ms);
  // A drain begun while disconnected can settle and leave the reconnect loop running: close too.
  if (!nc.isClosed()) await bounded(nc.close(), 1_000);
}
