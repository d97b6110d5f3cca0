// A cluster job's side of the shard server: which layer each upload is for and what the plan
// allows, where a received shard goes (straight into the output as it arrives when it is next,
// else its stage file and, with room, the reorder window), which layer the output needs next, recording it in the job state before the worker hears back, and
// the figures the run summary reports (workers, their kernels, threads and thread time).

import type { KV } from 'nats';
import { ArrowQuantError, type OutputError } from '../../core/errors.js';
import { layerKey } from '../../core/cluster/names.js';
import { encodeMessage } from '../../core/cluster/messages.js';
import { zeroTimings } from '../../core/model/row-reader.js';
import type { FinishedLayer, OrderedOutput, PreparedJob } from '../job.js';
import { finishedFromRecord } from '../run/finished-layer.js';
import { ProgressCounter, addTimings, type Progress, type WorkFigures } from '../run/run-summary.js';
import type { JobSettlement } from './job-settlement.js';
import { putRetrying } from './job-state.js';
import { partialOutputPath } from './partial-output.js';
import type { ReorderWindow } from './reorder-window.js';
import { checkShardRecord, maxShardBytes } from './shard-check.js';
import { shardPath, type DirectWriter, type ShardJobHandle, type ShardLayerSource, type ShardMaker, type StagedShard } from './shard-server.js';

export interface ShardIntakeOptions {
  allowDownload: boolean;
  onProgress?: (p: Progress) => void;
  /** a layer published by this run was staged, `seconds` after its task was published */
  onLayerStaged?: (index: number, seconds: number) => void;
  log: (line: string) => void;
  /** the output's next layer changed (uploads waiting for their turn look again) */
  onOutputAdvanced?: () => void;
}

/** Where the shards of a run were written from: on arrival (their one write), the reorder window, their stage files. */
export interface ShardSources {
  direct: number;
  memory: number;
  stage: number;
}

export class ShardIntake implements ShardJobHandle {
  readonly allowDownload: boolean;
  readonly from: ShardSources = { direct: 0, memory: 0, stage: 0 };
  private readonly workers = new Set<string>();
  private readonly makers = new Map<string, ShardMaker>();
  private thread = zeroTimings();
  private grpcBytes = 0;
  private readonly progress: ProgressCounter;
  /** when each layer's task was published by this run (performance.now()) */
  private readonly publishedAt = new Map<number, number>();

  constructor(
    private readonly job: PreparedJob,
    readonly stageDir: string,
    private readonly kv: KV,
    private readonly out: OrderedOutput,
    private readonly window: ReorderWindow,
    private readonly settlement: JobSettlement,
    /** layers done before this run (resumed), and the SHA-256 recorded for each */
    private readonly finished: Map<number, FinishedLayer>,
    private readonly recorded: Map<number, string>,
    private readonly opts: ShardIntakeOptions,
  ) {
    this.allowDownload = opts.allowDownload;
    this.progress = new ProgressCounter(job, opts.onProgress, { layers: finished.size, bytes: [...finished.values()].reduce((s, l) => s + l.bytesIn, 0) });
  }

  get layersDone(): number {
    return this.finished.size;
  }

  isDone(index: number): boolean {
    return this.finished.has(index);
  }

  /** every layer of the job, once all are done */
  layers(): FinishedLayer[] {
    return [...this.finished.values()];
  }

  published(index: number): void {
    this.publishedAt.set(index, performance.now());
  }

  layer(i: number): ShardLayerSource | undefined {
    const t = this.job.tasks[i];
    return t && {
      planHash: t.plan_hash, name: t.name, file: t.file, dataStart: t.data_start, byteLength: t.byte_length,
      maxShardBytes: maxShardBytes(t), check: (r, dataSha256) => checkShardRecord(r, t, dataSha256),
    };
  }

  reserveMemory(bytes: number): Uint8Array | null {
    return this.settlement.failed ? null : this.window.tryReserve(bytes);
  }

  releaseMemory(buffer: Uint8Array): void {
    this.window.release(buffer);
  }

  directWriter(i: number): DirectWriter | null {
    if (this.settlement.failed || i !== this.out.written || this.finished.has(i)) return null;
    // the output failing (e.g. its disk full) fails the job: no other worker can fix that
    return {
      write: (pieces, at) =>
        this.out.writeAhead(i, pieces, at).catch((e: unknown) => {
          this.settlement.fail(e);
          throw e;
        }),
    };
  }

  /** This host's disk would not take a shard: the job fails at once, naming the path and the cause. */
  onDiskFailure(error: OutputError): void {
    this.settlement.fail(error);
  }

  nextLayer(): number {
    return this.out.written;
  }

  recordedHash(i: number): string | undefined {
    return this.recorded.get(i);
  }

  // The job state records the shard before the worker hears back: a worker told "staged"
  // means a restarted coordinator will find it.
  async onStaged(i: number, info: StagedShard): Promise<void> {
    const { job, kv, out } = this;
    if (this.settlement.failed) throw new ArrowQuantError(`job ${job.id} has stopped`);
    const layer = finishedFromRecord(job, info.record);
    const state = { sha256: info.sha256, size: info.size, bits: layer.bits, cosine: layer.cosine, worker: info.workerId };
    if (info.path === null) {
      // Next in the output and written there as it arrived: committed, then recorded with its place.
      if (out.written !== i) throw new ArrowQuantError(`layer ${i} was written directly into ${partialOutputPath(job)} but the output is at layer ${out.written}`);
      const offset = out.nextOffset;
      // the output failing to take its last bytes (e.g. its disk full) fails the job, as in directWriter
      await out.commitAhead(i, info.frame.metaDataLength, info.frame.bodyLength).catch((e: unknown) => {
        this.settlement.fail(e);
        throw e;
      });
      this.from.direct++;
      this.finished.set(i, layer);
      // The layer is in the output now: recording it is retried (NATS may be restarting) rather than redone.
      await putRetrying(kv, layerKey(job.id, i), encodeMessage({ ...state, output_offset: offset }), this.opts.log, () => this.settlement.failed).catch((e: Error) => {
        this.settlement.fail(e);
        throw e;
      });
    } else {
      // Retried too, not failed: a put that timed out may have landed, and a worker then skips
      // the redelivered task as staged while this run has dropped the shard (a layer lost).
      await putRetrying(kv, layerKey(job.id, i), encodeMessage(state), this.opts.log, () => this.settlement.failed).catch((e: Error) => {
        this.settlement.fail(e);
        throw e;
      });
      if (info.bytes) this.window.keep(i, info.bytes);
      this.finished.set(i, layer);
    }
    this.recorded.set(i, info.sha256);
    this.workers.add(info.workerId);
    this.makers.set(info.workerId, info.maker);
    this.thread = addTimings(this.thread, info.maker.timings);
    this.grpcBytes += info.size;
    this.progress.layerDone(layer.name, layer.bytesIn);
    const sent = this.publishedAt.get(i);
    if (sent !== undefined) this.opts.onLayerStaged?.(i, (performance.now() - sent) / 1000);
    void this.appendReady();
    if (this.finished.size === job.tasks.length) this.settlement.succeed();
  }

  /** Write every consecutive layer that is staged from the output's next one on; a failure fails the job. */
  appendReady(): Promise<void> {
    return this.out.appendStaged((i) => this.staged(i), (shard) => this.written(shard)).then(
      () => this.opts.onOutputAdvanced?.(),
      (e) => this.settlement.fail(e),
    );
  }

  // A shard received into the reorder window is written from there; any other from its stage file.
  private staged(i: number): Uint8Array | string | null {
    return this.finished.has(i) ? (this.window.take(i) ?? shardPath(this.stageDir, i)) : null;
  }

  private written(shard: Uint8Array | string): void {
    if (typeof shard === 'string') this.from.stage++;
    else (this.from.memory++, this.window.release(shard));
  }

  /** What the workers of this run reported: their kernels, their threads in all, their thread time summed. */
  work(): WorkFigures {
    const makers = [...this.makers.values()];
    return {
      kernel: [...new Set(makers.map((m) => m.kernel || 'unknown'))].sort().join('+') || 'none (every layer resumed)',
      threads: makers.reduce((s, m) => s + m.threads, 0),
      timings: this.thread,
    };
  }

  get workerIds(): string[] {
    return [...this.workers].sort();
  }

  get bytesReceived(): number {
    return this.grpcBytes;
  }
}
