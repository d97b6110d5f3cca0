// A fixed pool of quantization threads (worker_threads running quant-thread.js). Requests queue
// and go to the first idle thread; a thread that dies fails its request and is replaced. A
// replacement that fails to start is reported (onShrink); with no thread left, every queued and
// later request fails with the reason instead of waiting forever.

import { Worker } from 'node:worker_threads';
import { join } from 'node:path';
import { availableParallelism } from 'node:os';
import { ArrowQuantError, deserializeError } from '../core/errors.js';
import { packageRoot } from '../core/package-info.js';
import type { PieceRequest, PieceResponse } from './thread-protocol.js';
import { selectKernel } from '../native/kernels.js';

type Request = PieceRequest extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;
type Ok = Extract<PieceResponse, { ok: true }>;

interface Slot {
  worker: Worker;
  busy: { id: number; resolve: (r: Ok) => void; reject: (e: Error) => void } | null;
}

export interface ThreadPoolOptions {
  /** makes one thread (tests inject failures here); default: quant-thread.js */
  spawnThread?: () => Worker;
  /** told when a dead thread could not be replaced: the pool runs with fewer threads */
  onShrink?: (message: string) => void;
}

const defaultThread = () => new Worker(join(packageRoot(), 'dist', 'worker', 'quant-thread.js'));

export function resolveThreads(numThreads: number): number {
  return numThreads > 0 ? numThreads : availableParallelism();
}

export class ThreadPool {
  private readonly slots: Slot[] = [];
  private readonly queue: { req: Request; resolve: (r: Ok) => void; reject: (e: Error) => void }[] = [];
  private nextId = 1;
  private closed = false;
  /** set when the last thread died and could not be replaced */
  private broken: ArrowQuantError | null = null;
  kernel = 'unknown';

  private constructor(
    readonly size: number,
    /** why the TypeScript reference runs instead of native kernels (and how much slower), or null */
    readonly kernelWarning: string | null,
    private readonly options: ThreadPoolOptions = {},
  ) {}

  /** threads running now (size minus those that died and could not be replaced) */
  get alive(): number {
    return this.slots.length;
  }

  /**
   * Checks the kernel choice here first (a bad ARROWQUANT_KERNEL is a typed error, the fallback
   * warning is given once), then starts the threads, which make the same choice.
   */
  static async start(size: number, options: ThreadPoolOptions = {}): Promise<ThreadPool> {
    const { warning } = selectKernel();
    const pool = new ThreadPool(size, warning, options);
    try {
      await Promise.all(Array.from({ length: size }, () => pool.spawn()));
    } catch (e) {
      await pool.close();
      throw e instanceof ArrowQuantError ? e : new ArrowQuantError(`quantization threads failed to start: ${(e as Error).message}`, { cause: e });
    }
    return pool;
  }

  private spawn(): Promise<void> {
    const worker = (this.options.spawnThread ?? defaultThread)();
    const slot: Slot = { worker, busy: null };
    this.slots.push(slot);
    return new Promise((resolveReady, rejectReady) => {
      let ready = false;
      worker.on('message', (msg: PieceResponse | { ready: true; kernel: string }) => {
        if ('ready' in msg) {
          ready = true;
          this.kernel = msg.kernel;
          resolveReady();
          this.dispatch();
          return;
        }
        const job = slot.busy;
        slot.busy = null;
        if (job && job.id === msg.id) {
          if (msg.ok) job.resolve(msg);
          else job.reject(deserializeError(msg.error));
        }
        this.dispatch();
      });
      const onDeath = (err: Error) => {
        const i = this.slots.indexOf(slot);
        if (i >= 0) this.slots.splice(i, 1);
        slot.busy?.reject(new ArrowQuantError(`quantization thread failed: ${err.message}`, { cause: err }));
        slot.busy = null;
        if (!ready) rejectReady(err);
        else if (!this.closed) void this.spawn().catch((e: Error) => this.lost(err, e));
      };
      worker.on('error', onDeath);
      worker.on('exit', (code) => {
        if (!this.closed) onDeath(new Error(`thread exited with code ${code}`));
      });
    });
  }

  /** A dead thread whose replacement failed: say so, and fail everything once none is left. */
  private lost(death: Error, spawnError: Error): void {
    if (this.closed) return;
    const why = `a quantization thread died (${death.message}) and its replacement failed to start: ${spawnError.message}`;
    this.options.onShrink?.(`${why}; ${this.slots.length} of ${this.size} threads left`);
    if (this.slots.length > 0) return;
    this.broken = new ArrowQuantError(`no quantization threads left: ${why}`, { cause: spawnError });
    for (const q of this.queue.splice(0)) q.reject(this.broken);
  }

  run(req: Request): Promise<Ok> {
    if (this.closed) return Promise.reject(new ArrowQuantError('thread pool is closed'));
    if (this.broken) return Promise.reject(this.broken);
    return new Promise((resolve, reject) => {
      this.queue.push({ req, resolve, reject });
      this.dispatch();
    });
  }

  private dispatch(): void {
    for (const slot of this.slots) {
      if (slot.busy || this.queue.length === 0) continue;
      const { req, resolve, reject } = this.queue.shift()!;
      const id = this.nextId++;
      slot.busy = { id, resolve, reject };
      slot.worker.postMessage({ ...req, id });
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const closedError = () => new ArrowQuantError('thread pool closed');
    for (const q of this.queue.splice(0)) q.reject(closedError());
    for (const s of this.slots) {
      s.busy?.reject(closedError());
      s.busy = null;
    }
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
