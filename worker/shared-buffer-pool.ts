// Output buffers for layers, shared with the threads that fill them and reused across layers of
// the same size: touching fresh pages costs more than quantizing into them.

const KEEP_PER_SIZE = 2;
/** Free buffers kept at most, in bytes: reuse must not turn into a second copy of the model. */
const KEEP_BYTES = 160 << 20;

export class SharedBufferPool {
  private readonly free = new Map<number, SharedArrayBuffer[]>();
  private freeBytes = 0;

  private acquire(bytes: number): SharedArrayBuffer {
    const sab = this.free.get(bytes)?.pop();
    if (sab) this.freeBytes -= bytes;
    return sab ?? new SharedArrayBuffer(bytes);
  }

  uint8(n: number): Uint8Array {
    return new Uint8Array(this.acquire(n));
  }
  uint16(n: number): Uint16Array {
    return new Uint16Array(this.acquire(n * 2));
  }
  float32(n: number): Float32Array {
    return new Float32Array(this.acquire(n * 4));
  }
  float64(n: number): Float64Array {
    return new Float64Array(this.acquire(n * 8));
  }

  release(...views: ArrayBufferView[]): void {
    for (const v of views) {
      const sab = v.buffer;
      if (!(sab instanceof SharedArrayBuffer)) continue;
      const list = this.free.get(sab.byteLength) ?? [];
      if (list.length >= KEEP_PER_SIZE || list.includes(sab) || this.freeBytes + sab.byteLength > KEEP_BYTES) continue;
      list.push(sab);
      this.freeBytes += sab.byteLength;
      this.free.set(sab.byteLength, list);
    }
  }
}
