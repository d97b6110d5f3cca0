// How a cluster job ends: every layer staged, or its first failure (a worker's recorded failure,
// a cancel, the lease lost, a stall, deliveries exhausted). Once failed, it stays failed: uploads
// still arriving are refused and nothing more is written.

export class JobSettlement {
  readonly done: Promise<void>;
  private settle!: { resolve: () => void; reject: (e: unknown) => void };
  private stopped = false;

  constructor() {
    this.done = new Promise<void>((resolve, reject) => (this.settle = { resolve, reject }));
    this.done.catch(() => undefined); // it may fail while tasks are still being published; handled where awaited
  }

  /** true once the job has failed (even after every layer was staged) */
  get failed(): boolean {
    return this.stopped;
  }

  succeed(): void {
    this.settle.resolve();
  }

  fail(e: unknown): void {
    this.stopped = true;
    this.settle.reject(e);
  }
}
