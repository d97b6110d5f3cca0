// The coordinator's memory for shards between their upload and their turn in the output file:
// a byte budget. An upload that fits is received into one buffer that stays here until the
// merge writes it (its stage file is only read back after a crash); one that does not fit is
// received into its stage file alone and copied from there when its turn comes. Nothing ever
// waits for room, so the upload of the layer the merge needs next cannot be stuck behind others.

export class ReorderWindow {
  private used = 0;
  private readonly held = new Map<number, Uint8Array>();
  /** buffers given back, reused for later uploads: a fresh large buffer costs page faults and GC */
  private readonly free: ArrayBuffer[] = [];
  private pooled = 0;

  constructor(readonly capacityBytes: number) {}

  /** Bytes reserved by uploads and kept shards (free pooled buffers are not counted). */
  get usedBytes(): number {
    return this.used;
  }

  /** A buffer of exactly `bytes` for an upload about to be received, or null when they do not fit. */
  tryReserve(bytes: number): Uint8Array | null {
    if (this.used + bytes > this.capacityBytes) return null;
    this.used += bytes;
    let best = -1;
    for (let i = 0; i < this.free.length; i++) if (this.free[i]!.byteLength >= bytes && (best < 0 || this.free[i]!.byteLength < this.free[best]!.byteLength)) best = i;
    if (best >= 0) return new Uint8Array(this.free.splice(best, 1)[0]!, 0, bytes);
    // no free buffer is large enough: drop free ones until a new one fits in the budget
    this.free.sort((a, b) => a.byteLength - b.byteLength);
    const size = Math.min(this.capacityBytes, roundUp(bytes, POOL_GRAIN));
    while (this.free.length && this.pooled + size > this.capacityBytes) this.pooled -= this.free.shift()!.byteLength;
    this.pooled += size;
    return new Uint8Array(new ArrayBuffer(size), 0, bytes);
  }

  /** Give back a buffer from tryReserve (the upload failed, was a duplicate, or its bytes were written). */
  release(bytes: Uint8Array): void {
    this.used = Math.max(0, this.used - bytes.byteLength);
    this.free.push(bytes.buffer as ArrayBuffer);
  }

  /** Keep the reserved bytes of a staged shard until the merge takes them. */
  keep(index: number, bytes: Uint8Array): void {
    const old = this.held.get(index);
    if (old) this.release(old);
    this.held.set(index, bytes);
  }

  /** The staged shard's bytes if they are here; its reservation stays until release(). */
  take(index: number): Uint8Array | undefined {
    const b = this.held.get(index);
    this.held.delete(index);
    return b;
  }

  /** Drop everything kept and pooled (the job is over). */
  clear(): void {
    this.held.clear();
    this.free.length = 0;
    this.used = 0;
    this.pooled = 0;
  }
}

/** Pooled buffers are sized in steps of this, so that one serves shards of nearby sizes. */
const POOL_GRAIN = 4 << 20;
const roundUp = (n: number, step: number) => Math.ceil(n / step) * step;

/** At most `limit` uploads receive bytes at once; the others wait (gRPC flow control holds their senders). */
export class UploadSlots {
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(readonly limit: number) {}

  /** Resolves with a release function; rejects with `onTimeout()` if no slot frees up within `timeoutMs`. */
  acquire(timeoutMs: number, onTimeout: () => Error): Promise<() => void> {
    const release = () => {
      const next = this.waiting.shift();
      if (next) next();
      else this.active--;
    };
    if (this.active < this.limit) {
      this.active++;
      return Promise.resolve(once(release));
    }
    return new Promise((resolve, reject) => {
      const grant = () => {
        clearTimeout(timer);
        resolve(once(release));
      };
      const timer = setTimeout(() => {
        const i = this.waiting.indexOf(grant);
        if (i >= 0) this.waiting.splice(i, 1);
        reject(onTimeout());
      }, timeoutMs);
      this.waiting.push(grant);
    });
  }
}

function once(fn: () => void): () => void {
  let done = false;
  return () => {
    if (!done) (done = true), fn();
  };
}
