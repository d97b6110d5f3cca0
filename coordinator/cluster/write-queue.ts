// Writes of an upload's bytes as they arrive, a few in flight at once: each piece is written
// while it is still in the CPU's cache (a page-cache copy from a cold, large buffer costs several
// times more), and receiving the next piece does not wait for the disk. The first failure is kept
// and thrown by the next push() or by drain().

export class WriteQueue {
  private readonly pending: Promise<void>[] = [];
  private failure: unknown = null;

  constructor(private readonly maxInFlight = 4) {}

  /** Start `write`; waits while `maxInFlight` writes are still running. */
  async push(write: () => Promise<unknown>): Promise<void> {
    this.throwFailure();
    const p = write().then(
      () => undefined,
      (e: unknown) => {
        this.failure ??= e;
      },
    );
    this.pending.push(p);
    if (this.pending.length >= this.maxInFlight) await this.pending.shift();
    this.throwFailure();
  }

  /** Every write started has ended; throws the first failure. */
  async drain(): Promise<void> {
    await Promise.all(this.pending.splice(0));
    this.throwFailure();
  }

  private throwFailure(): void {
    if (this.failure !== null) throw this.failure;
  }
}
