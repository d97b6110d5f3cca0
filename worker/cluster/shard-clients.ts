// A worker's gRPC channels to coordinators, one per address. Every job has its own coordinator
// address, so a long-lived worker would otherwise keep a channel for each job it ever served:
// channels not in use are closed once idle for a while, and beyond a cap the least recently
// used idle one goes. A channel in use (an upload or download running) is never closed here.

import type { ShardClient } from './shard-client.js';

export interface ShardClientLimits {
  /** a channel unused for this long is closed (default 10 min) */
  idleMs: number;
  /** at most this many idle channels are kept (default 8) */
  maxIdle: number;
}

interface Entry {
  client: ShardClient;
  used: number;
  inUse: number;
}

export class ShardClients {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly make: (address: string) => ShardClient,
    private readonly limits: ShardClientLimits = { idleMs: 10 * 60_000, maxIdle: 8 },
    private readonly now: () => number = Date.now,
  ) {}

  /** Channels open now. */
  get size(): number {
    return this.entries.size;
  }

  /** Runs `fn` with the channel to `address` (opened if need be), kept open while it runs. */
  async use<T>(address: string, fn: (client: ShardClient) => Promise<T>): Promise<T> {
    let e = this.entries.get(address);
    if (!e) e = { client: this.make(address), used: 0, inUse: 0 };
    this.entries.delete(address); // re-inserted last: the map's order is least recently used first
    this.entries.set(address, e);
    e.inUse++;
    e.used = this.now();
    try {
      return await fn(e.client);
    } finally {
      e.inUse--;
      e.used = this.now();
      this.entries.delete(address);
      this.entries.set(address, e);
      this.sweep();
    }
  }

  /** Start connecting the channel to `address` (opened if need be) without waiting; a failure shows in the next use. */
  connect(address: string): void {
    let e = this.entries.get(address);
    if (!e) {
      e = { client: this.make(address), used: this.now(), inUse: 0 };
      this.entries.set(address, e);
      this.sweep();
    }
    e.client.connect();
  }

  /** Close every channel (the worker is stopping). */
  closeAll(): void {
    for (const e of this.entries.values()) e.client.close();
    this.entries.clear();
  }

  private sweep(): void {
    const now = this.now();
    let idle = [...this.entries.values()].filter((e) => e.inUse === 0).length;
    for (const [address, e] of this.entries) {
      if (e.inUse > 0) continue;
      if (now - e.used >= this.limits.idleMs || idle > this.limits.maxIdle) {
        e.client.close();
        this.entries.delete(address);
        idle--;
      }
    }
  }
}
