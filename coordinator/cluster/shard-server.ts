// The coordinator's gRPC data plane: workers upload quantized shards (UploadShard) and, where
// they cannot read the model themselves, download a layer's source bytes (DownloadTensor).
// The same server answers the standard Health service. The transport is our own gRPC server on
// node:http2 (core/grpc/h2-server.ts): a chunk arrives as the DATA pieces it came in, each hashed
// and written (or copied into the window's buffer) without first being joined into one Buffer.
//
// An upload's declared size is bounded by what the job's plan allows for the layer before a byte
// is received, and at most maxConcurrentUploads receive at once (the others are held by gRPC
// flow control). Uploads arrive in the output's order where they can: one of a later layer waits
// (unread, held by flow control) while the layer the output needs next is being received, for at
// most orderWaitMs. Each byte is received once, hashed as it streams in and written once while it
// is still in cache: the upload of the layer that is next goes straight into the job's output
// (ShardJobHandle.directWriter), any other into a temporary file in the job's stage directory —
// and, when the job's reorder window has room, also into one buffer that the job keeps until the
// merge writes it. The shard is checked (size, SHA-256, a readable shard that is exactly what the
// plan produces for the layer) and only then renamed to `<stageDir>/<index>.shard`, committed in
// the output, or handed to the job; every rejection, cancellation or failure removes the
// temporary file, so the stage directory only ever holds complete, verified shards.

import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { createReadStream, existsSync } from 'node:fs';
import { mkdir, open, readFile, rename, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { status as Status } from '@grpc/grpc-js';
import { FormatError, type OutputError } from '../../core/errors.js';
import { decodeShard, frameShard, type ShardFrame } from '../../core/format/arrow-file.js';
import { ShardDigest, dataRangeIn, digestShard, type DataRange } from '../../core/format/shard-digest.js';
import type { LayerRecord } from '../../core/format/layer-schema.js';
import { statusName } from '../../core/grpc/errors.js';
import { GrpcCallError } from '../../core/grpc/h2-framing.js';
import { H2GrpcServer, type H2Call, type H2ServerStream } from '../../core/grpc/h2-server.js';
import { HealthService } from '../../core/grpc/health.js';
import {
  MAX_CHUNK_BYTES, SHARD_TRANSFER_SERVICE, grpcServices,
  type DownloadTensorRequest, type DownloadTensorResponse, type ShardHeader, type UploadShardResponse,
} from '../../core/grpc/proto.js';
import type { ServerTlsOptions } from '../../core/grpc/tls.js';
import { UploadMessages, type UploadMessage } from './upload-messages.js';
import { isJobId } from '../../core/cluster/job-id.js';
import { bounded } from '../../core/cluster/bounded.js';
import { UploadSlots } from './reorder-window.js';
import { WriteQueue } from './write-queue.js';
import { diskFailure } from './disk-failure.js';
import type { Timings } from '../../core/model/row-reader.js';

/** Where a staged shard of layer `index` lives. */
export const shardPath = (stageDir: string, index: number): string => join(stageDir, `${index}.shard`);

/** One layer of a job as the shard server needs it. */
export interface ShardLayerSource {
  /** the plan hash of the layer's task; uploads made for another plan are refused */
  planHash: string;
  /** the tensor name, checked against the uploaded shard's layer_name */
  name: string;
  /** the model file holding the layer's source bytes (for DownloadTensor) */
  file: string;
  dataStart: number;
  byteLength: number;
  /** the largest shard the plan allows for the layer: a header declaring more is refused at once */
  maxShardBytes: number;
  /** throws (with a message naming the field) when the decoded row is not what the plan produces; `dataSha256`: its data's SHA-256, already computed */
  check(record: LayerRecord, dataSha256?: string): void;
}

/** What the uploading worker says made the shard (informational, bounded by checkHeader). */
export interface ShardMaker {
  kernel: string;
  threads: number;
  timings: Timings;
}

export interface StagedShard {
  /** its stage file; null when its record batch message is already in the job's output (directWriter) */
  path: string | null;
  /** where the record batch message is in the shard's bytes */
  frame: Pick<ShardFrame, 'metaDataLength' | 'bodyLength'>;
  sha256: string;
  size: number;
  workerId: string;
  maker: ShardMaker;
  /** the decoded row; its buffers are views into the shard's bytes */
  record: LayerRecord;
  /**
   * the whole shard, in the buffer reserveMemory gave when the job's reorder window had room: the
   * job owns it from here on and releases it once the bytes are written; null: read `path`, or
   * (path null too) the bytes are in the output already
   */
  bytes: Uint8Array | null;
}

/** Puts an upload's record batch message into the job's output as it arrives (see directWriter). */
export interface DirectWriter {
  /** Write `bytes` at `at` bytes into the layer's record batch message. */
  /** `pieces`, consecutive, at `at` bytes into the record batch message */
  write(pieces: readonly Uint8Array[], at: number): Promise<void>;
}

/** What the coordinator registers for each job it serves. */
export interface ShardJobHandle {
  readonly stageDir: string;
  /** the job was started with --allow-download: DownloadTensor serves its layers' source bytes */
  readonly allowDownload?: boolean;
  layer(index: number): ShardLayerSource | undefined;
  /** A buffer of `bytes` in the job's reorder window, or null when it has no room (never waits). */
  reserveMemory(bytes: number): Uint8Array | null;
  /** Give back a buffer the job did not take over (the upload failed or was a duplicate). */
  releaseMemory(buffer: Uint8Array): void;
  /**
   * Asked, under the layer's lock, when an upload received into memory starts: when layer `index`
   * is next in the job's output, a writer that puts its bytes there as they arrive, so the shard
   * has no stage file and no other write; onStaged (path null) then commits it. Null otherwise.
   */
  directWriter?(index: number): DirectWriter | null;
  /** The layer the job's output needs next (uploads of later ones wait while it is received). */
  nextLayer?(): number;
  /** The SHA-256 the job already has for a layer (e.g. found in its output at resume), if any. */
  recordedHash(index: number): string | undefined;
  /**
   * Called once per newly staged shard, before the worker gets its answer. If it throws
   * (or rejects), the staged file is removed and the worker gets INTERNAL, so a retry stages again.
   */
  onStaged(index: number, shard: StagedShard): void | Promise<void>;
  /** This host's disk would not take a shard (full, read-only): the job cannot finish here. */
  onDiskFailure?(error: OutputError): void;
}

export interface ShardServerOptions {
  /** TLS (optionally mutual); plaintext when absent */
  tls?: ServerTlsOptions | null;
  /** an upload that sends nothing for this long is dropped (default 60 s) */
  idleTimeoutMs?: number;
  /** how long stop() lets running calls finish before cutting them (default 5 s) */
  graceMs?: number;
  /** uploads receiving bytes at once, over all jobs (default 4) */
  maxConcurrentUploads?: number;
  /** how long an upload waits for one of those slots before RESOURCE_EXHAUSTED (default idleTimeoutMs) */
  uploadSlotWaitMs?: number;
  /** how long an upload of a later layer waits while the next one is received, before it is staged (default 10 s) */
  orderWaitMs?: number;
  /** how long it waits for the next one's upload to start (default 1 s) */
  orderGapMs?: number;
  /** an upload must end within minUploadMs + its declared bytes at minBytesPerSecond (defaults 60 s, 1 MiB/s) */
  minUploadMs?: number;
  minBytesPerSecond?: number;
}

/** Emitted as 'upload' once an upload is over and its temporary file is gone. */
export interface UploadOutcome {
  jobId: string;
  layerIndex: number;
  workerId: string;
  outcome: 'staged' | 'duplicate' | 'rejected' | 'cancelled';
  receivedBytes: number;
  /** gRPC status name of a rejection */
  code?: string;
  details?: string;
}

/** A call to answer with a non-OK status. */
class Rejection extends Error {
  constructor(
    readonly code: Status,
    readonly details: string,
  ) {
    super(details);
  }
}

class Cancelled extends Error {}

/** An upload past its checks, being received. */
interface Upload {
  header: ShardHeader;
  handle: ShardJobHandle;
  layer: ShardLayerSource;
  messages: UploadMessages;
  isCancelled: () => boolean;
  progress: { receivedBytes: number };
  /** the window's buffer for the whole shard, if it had room */
  buffer: Uint8Array | null;
  /** performance.now() by which the upload must be over */
  deadline: number;
}

interface Received {
  response: UploadShardResponse;
  /** the job took over the upload's buffer */
  kept: boolean;
}

interface CheckedShard {
  record: LayerRecord;
  frame: Pick<ShardFrame, 'metaDataLength' | 'bodyLength'>;
}

const SHA256_HEX = /^[0-9a-f]{64}$/;

/** Emitted as 'waiting' when an upload starts waiting for its turn (see ShardServerOptions.orderWaitMs). */
export interface TurnWait {
  jobId: string;
  layerIndex: number;
  /** the layer the job's output needed then */
  nextLayer: number;
}

export class ShardServer extends EventEmitter<{ upload: [UploadOutcome]; waiting: [TurnWait] }> {
  readonly health = new HealthService();
  private readonly server: H2GrpcServer;
  private readonly jobs = new Map<string, ShardJobHandle>();
  /** SHA-256 of staged shards, per job and layer (filled on staging or by hashing a file found on disk) */
  private readonly stagedHashes = new Map<string, Map<number, string>>();
  private readonly locks = new Map<string, Promise<void>>();
  private readonly inflight = new Set<Promise<void>>();
  private uploads = 0;
  /** per job and layer: uploads past the order gate and not yet over */
  private readonly receiving = new Map<string, Map<number, number>>();
  /** uploads waiting for their turn (see inTurn) */
  private readonly orderWaiters = new Set<() => void>();
  private readonly idleTimeoutMs: number;
  private readonly graceMs: number;
  private readonly orderWaitMs: number;
  private readonly orderGapMs: number;
  private readonly slots: UploadSlots;
  private started = false;

  constructor(private readonly options: ShardServerOptions = {}) {
    super();
    this.idleTimeoutMs = options.idleTimeoutMs ?? 60_000;
    this.graceMs = options.graceMs ?? 5_000;
    this.orderWaitMs = options.orderWaitMs ?? 10_000;
    this.orderGapMs = Math.min(this.orderWaitMs, options.orderGapMs ?? orderGapDefault());
    this.slots = new UploadSlots(options.maxConcurrentUploads ?? 4);
    this.server = new H2GrpcServer({ tls: options.tls ?? null });
    const definition = grpcServices().shardTransfer.definition;
    this.server.route(definition.UploadShard!.path, (call) => this.track(this.upload(call)));
    this.server.addService(definition, {
      DownloadTensor: (call: H2ServerStream<DownloadTensorRequest, DownloadTensorResponse>) => this.track(this.download(call)),
    });
    this.health.addTo(this.server);
  }

  /** UploadShard calls running now (receiving, waiting for a slot, or being staged). */
  get uploadsInFlight(): number {
    return this.uploads;
  }

  /** The job's output moved on (its next layer changed): uploads waiting for their turn look again. */
  outputAdvanced(): void {
    for (const wake of [...this.orderWaiters]) wake();
  }

  registerJob(jobId: string, handle: ShardJobHandle): void {
    this.jobs.set(jobId, handle);
  }

  unregisterJob(jobId: string): void {
    this.jobs.delete(jobId);
    this.stagedHashes.delete(jobId);
  }

  /** Listens on "host:port" (port 0: the OS picks one) and reports SERVING. */
  async start(listen: string): Promise<{ port: number; address: string }> {
    const bound = await this.server.start(listen);
    this.started = true;
    this.setServing(true);
    return bound;
  }

  /** The health status of "" and of arrowquant.v1.ShardTransfer (advisory: calls are still served). */
  setServing(serving: boolean): void {
    const status = serving ? 'SERVING' : 'NOT_SERVING';
    this.health.setStatus('', status);
    this.health.setStatus(SHARD_TRANSFER_SERVICE, status);
  }

  /** Graceful stop (running calls may finish for graceMs), then forced; waits for uploads to clean up. */
  /**
   * Running calls get `graceMs` (default the server's) to finish, then are cut; their handlers get
   * as long again to clean up (a handler may be waiting on NATS, which may be gone).
   */
  async stop(graceMs = this.graceMs): Promise<void> {
    this.health.shutdown();
    if (this.started) await this.server.stop(graceMs);
    this.started = false;
    await bounded(Promise.allSettled([...this.inflight]), graceMs);
  }

  private track(p: Promise<void>): void {
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p));
  }

  // ---- UploadShard

  private async upload(call: H2Call): Promise<void> {
    const messages = new UploadMessages(call);
    const callback = (error: Rejection | null, res?: UploadShardResponse) => {
      if (error) call.sendStatus(error.code, error.details);
      else {
        call.sendMessage(grpcServices().shardTransfer.definition.UploadShard!.responseSerialize(res));
        call.sendStatus(Status.OK, 'OK');
      }
    };
    let cancelled = false;
    call.on('cancelled', () => {
      cancelled = true;
      this.outputAdvanced(); // a cancelled upload waiting for its turn stops waiting
    });
    let header: ShardHeader | undefined;
    const progress = { receivedBytes: 0 };
    // counted until its outcome is emitted, so a listener of 'upload' sees it gone
    this.uploads++;
    let counted = true;
    const ended = (o: UploadOutcome) => {
      if (counted) this.uploads--;
      counted = false;
      this.emit('upload', o);
    };
    try {
      const first = await this.nextMessage(messages, () => cancelled);
      if (first === null) throw new Rejection(Status.INVALID_ARGUMENT, 'the upload ended before its header: the first message must carry the header');
      if (!first.header) throw new Rejection(Status.INVALID_ARGUMENT, 'the first message of an upload must carry the header, not a chunk');
      header = checkHeader(first.header);
      const res = await this.receive(header, messages, () => cancelled, progress);
      ended(outcome(header, res.duplicate ? 'duplicate' : 'staged', progress.receivedBytes));
      callback(null, res);
    } catch (e) {
      const stopped = cancelled || e instanceof Cancelled;
      const rejection = e instanceof Rejection ? e : new Rejection(Status.INTERNAL, `${where(header)}: ${(e as Error).message}`);
      const base = header ?? { job_id: '', layer_index: -1, worker_id: '' };
      ended({ ...outcome(base, stopped ? 'cancelled' : 'rejected', progress.receivedBytes), ...(stopped ? {} : { code: statusName(rejection.code), details: rejection.details }) });
      if (!stopped) callback(rejection);
    } finally {
      messages.close();
    }
  }

  /** The next message, null at the end of the stream; throws Cancelled, or DEADLINE_EXCEEDED when idle. */
  private async nextMessage(messages: UploadMessages, isCancelled: () => boolean, at = 'upload'): Promise<UploadMessage | null> {
    let timer: NodeJS.Timeout | undefined;
    const idle = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Rejection(Status.DEADLINE_EXCEEDED, `${at}: no message for ${this.idleTimeoutMs} ms`)), this.idleTimeoutMs);
    });
    const next = messages.next();
    next.catch(() => undefined); // the idle timer may win; its later rejection is not news
    try {
      const r = await Promise.race([next, idle]);
      if (isCancelled()) throw new Cancelled();
      return r;
    } catch (e) {
      if (isCancelled()) throw new Cancelled();
      if (e instanceof GrpcCallError) throw new Rejection(e.code, `${at}: ${e.details}`);
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  private async receive(header: ShardHeader, messages: UploadMessages, isCancelled: () => boolean, progress: { receivedBytes: number }): Promise<UploadShardResponse> {
    const at = where(header);
    const handle = this.jobs.get(header.job_id);
    if (!handle) throw new Rejection(Status.NOT_FOUND, `${at}: unknown job "${header.job_id}" (not registered on this coordinator)`);
    const layer = handle.layer(header.layer_index);
    if (!layer) throw new Rejection(Status.NOT_FOUND, `${at}: job "${header.job_id}" has no layer ${header.layer_index}`);
    if (layer.planHash !== header.plan_hash) {
      throw new Rejection(Status.FAILED_PRECONDITION, `${at}: the shard was made for plan ${header.plan_hash}, the job's plan is ${layer.planHash}`);
    }
    // Fail fast on a conflict; the decision that counts is taken again under the lock.
    const staged = await this.stagedHash(header.job_id, handle, header.layer_index);
    if (staged !== undefined && staged !== header.sha256) throw conflict(at, staged, header.sha256);

    if (header.size > layer.maxShardBytes) {
      throw new Rejection(Status.INVALID_ARGUMENT, `${at}: the header declares ${header.size} bytes; the job's plan allows at most ${layer.maxShardBytes} for this layer`);
    }

    await this.inTurn(header.job_id, handle, header.layer_index, isCancelled);
    if (isCancelled()) throw new Cancelled();
    const count = (d: number) => {
      let m = this.receiving.get(header.job_id);
      if (!m) this.receiving.set(header.job_id, (m = new Map()));
      const n = (m.get(header.layer_index) ?? 0) + d;
      if (n > 0) m.set(header.layer_index, n);
      else m.delete(header.layer_index);
    };
    count(1);
    this.outputAdvanced(); // uploads waiting for this layer now wait for it to end
    const waitMs = this.options.uploadSlotWaitMs ?? this.idleTimeoutMs;
    let release: (() => void) | null = null;
    let buffer: Uint8Array | null = null;
    try {
      release = await this.slots.acquire(waitMs, () => new Rejection(Status.RESOURCE_EXHAUSTED, `${at}: no upload slot freed up within ${waitMs} ms (${this.slots.limit} uploads at once)`));
      await mkdir(handle.stageDir, { recursive: true });
      buffer = handle.reserveMemory(header.size);
      const upload: Upload = { header, handle, layer, messages, isCancelled, progress, buffer, deadline: performance.now() + this.uploadBudgetMs(header.size) };
      const res = (buffer && (await this.receiveDirect(upload))) || (await this.receiveStaged(upload));
      if (res.kept) buffer = null; // the job owns it now
      return res.response;
    } catch (e) {
      const disk = diskFailure(shardPath(handle.stageDir, header.layer_index), e);
      if (disk) handle.onDiskFailure?.(disk);
      throw e;
    } finally {
      if (buffer) handle.releaseMemory(buffer);
      release?.();
      count(-1);
      this.outputAdvanced();
    }
  }

  /** The most an upload of `size` bytes may take, end to end. */
  private uploadBudgetMs(size: number): number {
    return (this.options.minUploadMs ?? 60_000) + (size / (this.options.minBytesPerSecond ?? 1 << 20)) * 1000;
  }

  /**
   * Waits while the job's output needs an earlier layer than `index` — so that shards arrive in
   * order and each goes straight into the output: up to orderWaitMs while that layer's upload is
   * being received, up to orderGapMs while it has not started. Then the upload is staged instead.
   */
  private async inTurn(jobId: string, handle: ShardJobHandle, index: number, isCancelled: () => boolean): Promise<void> {
    if (!handle.nextLayer) return;
    const start = performance.now();
    let announced = false;
    for (;;) {
      const next = handle.nextLayer();
      if (index <= next || isCancelled() || this.jobs.get(jobId) !== handle) return;
      // the next layer is arriving: wait for it; else give its upload a moment to start
      const limit = this.receiving.get(jobId)?.has(next) ? this.orderWaitMs : this.orderGapMs;
      const left = start + limit - performance.now();
      if (left <= 0) return;
      if (!announced) (announced = true), this.emit('waiting', { jobId, layerIndex: index, nextLayer: next });
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          this.orderWaiters.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, left);
        this.orderWaiters.add(wake);
      });
    }
  }

  /**
   * Under the layer's lock from start to end: when the job lets this upload write straight into
   * its output (the layer is next and not staged), receive it there and commit it. Null when the
   * job does not (the upload is then staged).
   */
  private async receiveDirect(u: Upload): Promise<Received | null> {
    const { header, handle } = u;
    if (!handle.directWriter) return null;
    return this.withLock(`${header.job_id}/${header.layer_index}`, async () => {
      if ((await this.stagedHash(header.job_id, handle, header.layer_index)) !== undefined) return null;
      const writer = handle.directWriter!(header.layer_index);
      if (!writer) return null;
      // The check decodes the shard from `buffer`, which gets every byte but the data: the data was
      // hashed as it arrived and goes from the received pieces straight into the output's window.
      const buffer = u.buffer!;
      const data = dataRangeOf(header);
      let frame: ShardFrame | null = null;
      const queue = new WriteQueue();
      const dataSha256 = await this.receiveChunks(u, async (pieces, offset, bytes) => {
        for (let at = offset, p = 0; p < pieces.length; at += pieces[p]!.byteLength, p++) copyOutside(pieces[p]!, at, data, buffer);
        const received = offset + bytes;
        const parts: Uint8Array[] = [];
        let start = offset; // where `parts` begin in the shard
        if (!frame) {
          frame = frameOf(buffer.subarray(0, received), header, received === header.size);
          if (!frame) return;
          // what came before (the message's start: never data, which follows its metadata) is in `buffer`
          if (offset > frame.offset) parts.push(buffer.subarray(frame.offset, offset));
          start = frame.offset; // the message starts in this chunk or in one before it
        }
        const end = frame.offset + frame.length;
        for (let at = offset, p = 0; p < pieces.length; at += pieces[p]!.byteLength, p++) {
          const from = Math.max(at, frame.offset);
          const to = Math.min(at + pieces[p]!.byteLength, end);
          if (to > from) parts.push(pieces[p]!.subarray(from - at, to - at));
        }
        // one write per message, not per HTTP/2 DATA piece
        if (parts.length) await queue.push(() => writer.write(parts, start - frame!.offset));
      });
      await queue.drain();
      const shard = checkShard(buffer, header, u.layer, dataSha256);
      return this.stageLocked(header, handle, null, shard, u.progress.receivedBytes, null);
    });
  }

  /** Receive and hash the shard into a stage file (and the window's buffer, if any), then stage it. */
  private async receiveStaged(u: Upload): Promise<Received> {
    const { header, handle, buffer } = u;
    const tmp = join(handle.stageDir, `.${header.layer_index}.shard.upload-${randomUUID()}`);
    let fh: FileHandle | null = await open(tmp, 'wx');
    try {
      const queue = new WriteQueue();
      const dataSha256 = await this.receiveChunks(u, async (pieces, offset) => {
        if (buffer) for (let at = offset, p = 0; p < pieces.length; at += pieces[p]!.byteLength, p++) buffer.set(pieces[p]!, at);
        await queue.push(() => writeAll(fh!, pieces, offset));
      });
      await queue.drain();
      // No fsync per shard: a coordinator that crashes keeps the page cache, and after a machine
      // crash a resumed job re-checks every staged shard against the hash the job state recorded.
      await fh.close();
      fh = null;
      // Without room in the window the shard is read back, to be checked, and then dropped — all
      // but its data, whose hash was taken as it streamed in (readSkeleton): memory beyond the
      // window grows by the small buffers of one shard at a time.
      const shard = buffer
        ? checkShard(buffer, header, u.layer, dataSha256)
        : await this.withLock('read-back', async () => checkShard(await readSkeleton(tmp, header), header, u.layer, dataSha256));
      return await this.withLock(`${header.job_id}/${header.layer_index}`, () => this.stageLocked(header, handle, tmp, shard, u.progress.receivedBytes, buffer));
    } finally {
      await fh?.close().catch(() => undefined);
      await rm(tmp, { force: true });
    }
  }

  /**
   * Every chunk after the header, in order, checked, counted and hashed, to `take` as the pieces
   * it arrived in (`bytes` in all, at `offset` in the shard); then the size and digest are
   * checked. Returns the data buffer's SHA-256 (part of the digest).
   */
  private async receiveChunks(u: Upload, take: (pieces: readonly Uint8Array[], offset: number, bytes: number) => Promise<void>): Promise<string> {
    const { header, progress } = u;
    const at = where(header);
    const hash = new ShardDigest(header.size, dataRangeOf(header));
    for (let n = 1; ; n++) {
      const msg = await this.nextMessage(u.messages, u.isCancelled, at);
      if (msg === null) break;
      if (!msg.chunk) throw new Rejection(Status.INVALID_ARGUMENT, `${at}: message ${n + 1} carries a second header; only chunks may follow the header`);
      const { chunk, bytes } = msg;
      if (bytes > MAX_CHUNK_BYTES) {
        throw new Rejection(Status.INVALID_ARGUMENT, `${at}: chunk ${n} holds ${bytes} bytes, more than the ${MAX_CHUNK_BYTES} allowed`);
      }
      const offset = progress.receivedBytes;
      progress.receivedBytes += bytes;
      if (progress.receivedBytes > header.size) {
        throw new Rejection(Status.DATA_LOSS, `${at}: received more than the ${header.size} bytes the header declared (${progress.receivedBytes} so far)`);
      }
      if (performance.now() > u.deadline) {
        throw new Rejection(Status.DEADLINE_EXCEEDED, `${at}: ${progress.receivedBytes} of ${header.size} bytes received in ${Math.round(this.uploadBudgetMs(header.size))} ms, the most an upload of that size may take`);
      }
      for (const piece of chunk) hash.update(piece);
      await take(chunk, offset, bytes);
    }
    if (progress.receivedBytes !== header.size) {
      throw new Rejection(Status.DATA_LOSS, `${at}: received ${progress.receivedBytes} bytes, the header declared ${header.size}`);
    }
    const sha256 = hash.digest();
    if (sha256 !== header.sha256) throw new Rejection(Status.DATA_LOSS, `${at}: the received bytes have digest ${sha256}, the header declared ${header.sha256}`);
    return hash.dataSha256();
  }

  /** Under the layer's lock: duplicate, conflict, or rename into place and tell the job. */
  private async stageLocked(
    header: ShardHeader, handle: ShardJobHandle, tmp: string | null, shard: CheckedShard, size: number, bytes: Uint8Array | null,
  ): Promise<Received> {
    const at = where(header);
    if (this.jobs.get(header.job_id) !== handle) throw new Rejection(Status.ABORTED, `${at}: the job was unregistered during the upload`);
    const staged = await this.stagedHash(header.job_id, handle, header.layer_index);
    if (staged === header.sha256) return { response: { duplicate: true, received_bytes: size }, kept: false };
    if (staged !== undefined) throw conflict(at, staged, header.sha256);
    const path = tmp === null ? null : shardPath(handle.stageDir, header.layer_index);
    if (tmp !== null) await rename(tmp, path!);
    try {
      const maker: ShardMaker = {
        kernel: header.kernel ?? '', threads: header.threads ?? 0,
        timings: { readMs: header.read_ms ?? 0, kernelMs: header.kernel_ms ?? 0, hashMs: header.hash_ms ?? 0, writeMs: header.write_ms ?? 0 },
      };
      await handle.onStaged(header.layer_index, { path, frame: shard.frame, sha256: header.sha256, size, workerId: header.worker_id, maker, record: shard.record, bytes });
    } catch (e) {
      if (path !== null) await rm(path, { force: true });
      throw new Rejection(Status.INTERNAL, `${at}: the coordinator could not record the staged shard: ${(e as Error).message}`);
    }
    this.hashesOf(header.job_id).set(header.layer_index, header.sha256);
    return { response: { duplicate: false, received_bytes: size }, kept: bytes !== null };
  }

  private hashesOf(jobId: string): Map<number, string> {
    let m = this.stagedHashes.get(jobId);
    if (!m) this.stagedHashes.set(jobId, (m = new Map()));
    return m;
  }

  /** SHA-256 of the staged shard of a layer, or undefined when none is staged (a file from an earlier run counts). */
  private async stagedHash(jobId: string, handle: ShardJobHandle, index: number): Promise<string | undefined> {
    const known = this.hashesOf(jobId).get(index) ?? handle.recordedHash(index);
    if (known !== undefined) return known;
    // Called several times per upload: a missing file is the usual answer, found without an exception.
    const path = shardPath(handle.stageDir, index);
    if (!existsSync(path)) return undefined;
    let bytes: Buffer;
    try {
      bytes = await readFile(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
    const sha = digestShard(bytes).sha256;
    if (this.jobs.get(jobId) === handle) this.hashesOf(jobId).set(index, sha);
    return sha;
  }

  private async withLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(key) ?? Promise.resolve();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const mine = previous.then(() => gate);
    this.locks.set(key, mine);
    await previous;
    try {
      return await fn();
    } finally {
      release();
      if (this.locks.get(key) === mine) this.locks.delete(key);
    }
  }

  // ---- DownloadTensor

  private async download(call: H2ServerStream<DownloadTensorRequest, DownloadTensorResponse>): Promise<void> {
    const { job_id, layer_index } = call.request;
    const at = `download of layer ${layer_index} of job ${isJobId(job_id) ? `"${job_id}"` : '(invalid id)'}`;
    try {
      const handle = isJobId(job_id) ? this.jobs.get(job_id) : undefined;
      const layer = handle?.layer(layer_index);
      if (!handle) throw new Rejection(Status.NOT_FOUND, `${at}: unknown job${isJobId(job_id) ? ` "${job_id}"` : ''} (not registered on this coordinator)`);
      // Source weights leave this host only for a job its operator started with --allow-download.
      if (!handle.allowDownload) throw new Rejection(Status.PERMISSION_DENIED, `${at}: the job was not started with --allow-download`);
      if (!layer) throw new Rejection(Status.NOT_FOUND, `${at}: job "${job_id}" has no layer ${layer_index}`);
      let sent = 0;
      if (layer.byteLength > 0) {
        const source = createReadStream(layer.file, { start: layer.dataStart, end: layer.dataStart + layer.byteLength - 1, highWaterMark: MAX_CHUNK_BYTES });
        try {
          for await (const buf of source) {
            if (call.cancelled) throw new Cancelled();
            sent += (buf as Buffer).byteLength;
            if (!call.write({ chunk: buf as Buffer })) await drained(call);
          }
        } catch (e) {
          if (e instanceof Cancelled || e instanceof Rejection) throw e;
          throw new Rejection(Status.INTERNAL, `${at}: cannot read ${layer.file}: ${(e as Error).message}`);
        } finally {
          source.destroy();
        }
      }
      if (sent !== layer.byteLength) {
        throw new Rejection(Status.DATA_LOSS, `${at}: ${layer.file} ends before the layer's bytes [${layer.dataStart}, ${layer.dataStart + layer.byteLength}) (${sent} read)`);
      }
      call.end();
    } catch (e) {
      if (e instanceof Cancelled || call.cancelled) return;
      const r = e instanceof Rejection ? e : new Rejection(Status.INTERNAL, `${at}: ${(e as Error).message}`);
      // grpc-js turns an 'error' event on a server stream into the call's status
      call.emit('error', { code: r.code, details: r.details });
    }
  }
}

/** Waits for a server stream to drain; throws Cancelled if the call goes away first. */
function drained(call: H2ServerStream<DownloadTensorRequest, DownloadTensorResponse>): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      call.off('drain', onDrain);
      call.off('cancelled', onGone);
      call.off('close', onGone);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = () => done();
    const onGone = () => done(new Cancelled());
    call.on('drain', onDrain);
    call.on('cancelled', onGone);
    call.on('close', onGone);
  });
}

/** Writes the pieces one after the other at `position` (one writev, more only after a short write). */
async function writeAll(fh: FileHandle, pieces: readonly Uint8Array[], position: number): Promise<void> {
  let rest = [...pieces];
  while (rest.length > 0) {
    let written = (await fh.writev(rest, position)).bytesWritten;
    if (written === 0 && rest.some((r) => r.byteLength > 0)) throw new Error(`a write at ${position} wrote nothing`);
    position += written;
    while (rest.length > 0 && written >= rest[0]!.byteLength) written -= rest.shift()!.byteLength;
    if (rest.length > 0 && written > 0) rest[0] = rest[0]!.subarray(written);
  }
}

function where(h: Pick<ShardHeader, 'job_id' | 'layer_index' | 'worker_id'> | undefined): string {
  return h ? `upload of layer ${h.layer_index} of job "${h.job_id}" from worker "${h.worker_id}"` : 'upload';
}

function outcome(h: Pick<ShardHeader, 'job_id' | 'layer_index' | 'worker_id'>, what: UploadOutcome['outcome'], receivedBytes: number): UploadOutcome {
  return { jobId: h.job_id, layerIndex: h.layer_index, workerId: h.worker_id, outcome: what, receivedBytes };
}

function conflict(at: string, staged: string, declared: string): Rejection {
  return new Rejection(Status.FAILED_PRECONDITION, `${at}: a different shard is already staged for this layer (SHA-256 ${staged}, this one ${declared})`);
}

function checkHeader(h: ShardHeader): ShardHeader {
  const bad = (msg: string): never => {
    throw new Rejection(Status.INVALID_ARGUMENT, `upload header: ${msg}`);
  };
  if (!isJobId(h.job_id)) bad(`job_id ${JSON.stringify(String(h.job_id).slice(0, 80))} is not a job id`);
  if (!h.plan_hash) bad('plan_hash is empty');
  if (!h.worker_id) bad('worker_id is empty');
  if (h.worker_id.length > 256) bad(`worker_id is ${h.worker_id.length} characters, at most 256 allowed`);
  if (!SHA256_HEX.test(h.sha256)) bad(`sha256 "${h.sha256}" is not 64 lowercase hex digits`);
  if (!Number.isSafeInteger(h.size) || h.size <= 0) bad(`size ${h.size} is not a positive byte count`);
  const { offset, length } = dataRangeOf(h);
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > h.size) {
    bad(`data range [${offset}, ${offset + length}) is not within the shard's ${h.size} bytes`);
  }
  if ((h.kernel ?? '').length > 64) bad(`kernel is ${h.kernel!.length} characters, at most 64 allowed`);
  if (!Number.isSafeInteger(h.threads ?? 0) || (h.threads ?? 0) > 65_536) bad(`threads ${h.threads} is not a thread count`);
  for (const f of ['read_ms', 'kernel_ms', 'hash_ms', 'write_ms'] as const) {
    const v = h[f] ?? 0;
    if (!Number.isFinite(v) || v < 0 || v > 1e9) bad(`${f} ${v} is not a duration in milliseconds`);
  }
  return h;
}

/**
 * Decodes the uploaded bytes and checks they are the layer the header names (DATA_LOSS otherwise)
 * and exactly what the plan produces for it (FAILED_PRECONDITION otherwise).
 */
function checkShard(bytes: Uint8Array, h: ShardHeader, layer: ShardLayerSource, dataSha256: string): CheckedShard {
  const expectedName = layer.name;
  const at = where(h);
  let record: LayerRecord;
  let frame: CheckedShard['frame'];
  try {
    const d = decodeShard(bytes, `shard of layer ${h.layer_index}`);
    record = d.record;
    frame = { metaDataLength: d.metaDataLength, bodyLength: d.bodyLength };
  } catch (e) {
    if (e instanceof FormatError) throw new Rejection(Status.DATA_LOSS, `${at}: not a valid shard: ${e.message}`);
    throw e;
  }
  if (record.layer_index !== h.layer_index || record.layer_name !== expectedName) {
    throw new Rejection(
      Status.DATA_LOSS,
      `${at}: the shard holds layer ${record.layer_index} "${record.layer_name}", expected layer ${h.layer_index} "${expectedName}"`,
    );
  }
  // the digest took the data's hash from the range the header declared: it must be the data's
  const range = dataRangeOf(h);
  const actual = dataRangeIn([bytes], record.data);
  if (!actual || actual.offset !== range.offset || actual.length !== range.length) {
    const found = actual ? `[${actual.offset}, ${actual.offset + actual.length})` : 'not in its bytes';
    throw new Rejection(Status.DATA_LOSS, `${at}: the header puts the data at [${range.offset}, ${range.offset + range.length}); the shard's data is ${found}`);
  }
  try {
    layer.check(record, dataSha256);
  } catch (e) {
    throw new Rejection(Status.FAILED_PRECONDITION, `${at}: the shard does not match the job's plan: ${(e as Error).message}`);
  }
  return { record, frame };
}

/**
 * The shard's framing from its first `received` bytes, or null while too few have arrived to tell
 * (`all`: none more will). A shard whose framing is bad is rejected at once.
 */
const dataRangeOf = (h: ShardHeader): DataRange => ({ offset: h.data_offset ?? 0, length: h.data_length ?? 0 });

/** Copy the bytes of `piece` (at `at` in the shard) that lie outside the data range into `into`. */
function copyOutside(piece: Uint8Array, at: number, data: DataRange, into: Uint8Array): void {
  const end = at + piece.byteLength;
  const dataEnd = data.offset + data.length;
  if (at < data.offset) into.set(piece.subarray(0, Math.min(piece.byteLength, data.offset - at)), at);
  if (end > dataEnd) {
    const from = Math.max(at, dataEnd);
    into.set(piece.subarray(from - at), from);
  }
}

/**
 * A received shard's bytes from its file, but for its data: that range stays zero and is never
 * touched, so it takes no memory (a zero-filled allocation is not resident until written).
 */
async function readSkeleton(path: string, h: ShardHeader): Promise<Buffer> {
  const { offset, length } = dataRangeOf(h);
  const bytes = Buffer.alloc(h.size);
  const fh = await open(path, 'r');
  try {
    for (const [from, to] of [[0, offset], [offset + length, h.size]] as const) {
      for (let at = from; at < to; ) {
        const { bytesRead } = await fh.read(bytes, at, to - at, at);
        if (bytesRead === 0) throw new Error(`${path} ends at byte ${at}, before the ${h.size} received`);
        at += bytesRead;
      }
    }
  } finally {
    await fh.close();
  }
  return bytes;
}

function frameOf(head: Uint8Array, h: ShardHeader, all: boolean): ShardFrame | null {
  try {
    return frameShard(head, h.size, `shard of layer ${h.layer_index}`);
  } catch (e) {
    if (!all && e instanceof FormatError && /truncated before/.test(e.message)) return null;
    if (e instanceof FormatError) throw new Rejection(Status.DATA_LOSS, `${where(h)}: not a valid shard: ${e.message}`);
    throw e;
  }
}

/** How long an upload waits for the next layer's to start (ARROW_QUANT_ORDER_GAP_MS, default 1 s). */
function orderGapDefault(env: NodeJS.ProcessEnv = process.env): number {
  const v = Number(env.ARROW_QUANT_ORDER_GAP_MS);
  return Number.isInteger(v) && v >= 0 ? v : 1_000;
}
