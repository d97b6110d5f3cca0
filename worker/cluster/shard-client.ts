// A worker's side of the gRPC data plane: uploads a shard to the job's coordinator, downloads a
// layer's source bytes when the worker cannot read the model, and asks for health. A shard is
// uploaded from the buffers the kernels wrote (views, no copies), hashed once, in 1 MiB messages
// with backpressure; a download is streamed to its file.
// Every failure is a ShardTransferError (the call's status, the peer) or a ShardFileError
// (the local file).

import { randomUUID } from 'node:crypto';
import { ShardDigest, dataRangeIn, digestShard, type DataRange } from '../../core/format/shard-digest.js';
import { Readable } from 'node:stream';
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import { getClientChannel, status as Status, type ClientReadableStream, type ClientWritableStream } from '@grpc/grpc-js';
import { ShardFileError, ShardTransferError, toShardTransferError } from '../../core/grpc/errors.js';
import {
  GRPC_MESSAGE_LIMITS, MAX_CHUNK_BYTES, grpcServices,
  type DownloadTensorResponse, type HealthClient, type ServingStatus, type ShardHeader, type ShardTransferClient, type UploadShardRequest,
  type UploadShardResponse,
} from '../../core/grpc/proto.js';
import { clientCredentials, type ClientTlsOptions } from '../../core/grpc/tls.js';

export interface ShardClientTimeouts {
  /** deadline of a health check (default 5 s) */
  healthMs?: number;
  /** a stream's deadline is baseMs + its bytes at minBytesPerSecond (defaults 60 s, 1 MiB/s) */
  streamBaseMs?: number;
  minBytesPerSecond?: number;
  /** a download of unknown size is abandoned when no chunk arrives for this long (default 60 s) */
  downloadIdleMs?: number;
}

export type UploadHeader = Pick<ShardHeader, 'job_id' | 'layer_index' | 'plan_hash' | 'worker_id'> &
  Partial<Pick<ShardHeader, 'kernel' | 'threads' | 'read_ms' | 'kernel_ms' | 'hash_ms' | 'write_ms'>>;

export class ShardClient {
  private readonly client: ShardTransferClient;
  private readonly healthClient: HealthClient;
  private readonly timeouts: Required<ShardClientTimeouts>;

  constructor(
    readonly address: string,
    tls?: ClientTlsOptions | null,
    timeouts: ShardClientTimeouts = {},
  ) {
    const { credentials, channelOptions } = clientCredentials(tls);
    const { shardTransfer, health } = grpcServices();
    this.client = new shardTransfer.Client(address, credentials, { ...GRPC_MESSAGE_LIMITS, ...channelOptions });
    this.healthClient = new health.Client(address, credentials, { channelOverride: getClientChannel(this.client) });
    this.timeouts = { healthMs: 5_000, streamBaseMs: 60_000, minBytesPerSecond: 1024 * 1024, downloadIdleMs: 60_000, ...timeouts };
  }

  /**
   * Uploads a shard — its bytes as consecutive chunks in memory (size and digest computed here) —
   * for the layer of `header`. `data` is the record's data buffer among the chunks (a view, as the
   * encoder gives it) with its SHA-256, so that only the other bytes are hashed here; without it
   * the shard is decoded to find its data. `duplicate` is true when the coordinator already had
   * exactly this shard.
   */
  async upload(
    header: UploadHeader, shard: readonly Uint8Array[], data?: { bytes: Uint8Array; sha256: string },
  ): Promise<{ duplicate: boolean; receivedBytes: number }> {
    const action = `upload of layer ${header.layer_index} of job "${header.job_id}"`;
    const { size, sha256, range } = uploadDigest(shard, data);
    let call!: ClientWritableStream<UploadShardRequest>;
    const answer = new Promise<UploadShardResponse>((resolve, reject) => {
      call = this.client.UploadShard({ deadline: this.deadline(size) }, (err, res) => (err ? reject(err) : resolve(res!)));
    });
    answer.catch(() => undefined); // awaited below; a rejection while still sending is handled there
    let finished = false;
    void answer.finally(() => (finished = true)).catch(() => undefined);
    const source = Readable.from(sliceChunks(shard));
    try {
      call.write({ header: { ...header, size, sha256, data_offset: range.offset, data_length: range.length } });
      for await (const chunk of source) {
        if (finished) break; // the coordinator has answered (a rejection): stop sending
        if (!call.write({ chunk: chunk as Buffer })) await Promise.race([onceDrained(call), answer.then(() => undefined, () => undefined)]);
      }
      call.end();
    } catch (e) {
      call.cancel();
      throw new ShardFileError(`${action}: cannot send the shard: ${(e as Error).message}`, 'memory', 'read', { cause: e });
    } finally {
      source.destroy();
    }
    try {
      const res = await answer;
      return { duplicate: res.duplicate, receivedBytes: res.received_bytes };
    } catch (e) {
      throw toShardTransferError(e, action, this.address);
    }
  }

  /**
   * Downloads the source bytes of a layer to `destFile` (written under a temporary name and
   * renamed when complete); returns the bytes written. `expectedBytes`, when known, is checked.
   */
  async download(jobId: string, layerIndex: number, destFile: string, expectedBytes?: number): Promise<number> {
    const action = `download of layer ${layerIndex} of job "${jobId}"`;
    const tmp = `${destFile}.part-${randomUUID()}`;
    let fh: FileHandle;
    try {
      fh = await open(tmp, 'wx');
    } catch (e) {
      throw new ShardFileError(`${action}: cannot create ${tmp}: ${(e as Error).message}`, destFile, 'write', { cause: e });
    }
    const options = expectedBytes === undefined ? {} : { deadline: this.deadline(expectedBytes) };
    const call: ClientReadableStream<DownloadTensorResponse> = this.client.DownloadTensor({ job_id: jobId, layer_index: layerIndex }, options);
    let idle: NodeJS.Timeout | undefined;
    let stalled = false;
    const armIdle = () => {
      clearTimeout(idle);
      idle = setTimeout(() => {
        stalled = true;
        call.cancel();
      }, this.timeouts.downloadIdleMs);
    };
    let written = 0;
    let completed = false;
    try {
      armIdle();
      try {
        for await (const msg of call) {
          armIdle();
          const chunk = (msg as DownloadTensorResponse).chunk;
          // Counted as they arrive: a coordinator sending more than the layer holds is cut off at once.
          if (expectedBytes !== undefined && written + chunk.byteLength > expectedBytes) {
            call.cancel();
            throw new ShardFileError(`${action}: received more than the expected ${expectedBytes} bytes (${written + chunk.byteLength} so far)`, destFile, 'write');
          }
          try {
            await fh.writeFile(chunk);
          } catch (e) {
            call.cancel();
            throw new ShardFileError(`${action}: cannot write ${tmp}: ${(e as Error).message}`, destFile, 'write', { cause: e });
          }
          written += chunk.byteLength;
        }
      } catch (e) {
        if (e instanceof ShardFileError) throw e;
        const details = `no data for ${this.timeouts.downloadIdleMs} ms`;
        if (stalled) throw new ShardTransferError(`${action} to ${this.address} failed: DEADLINE_EXCEEDED: ${details}`, Status.DEADLINE_EXCEEDED, details, this.address, { cause: e });
        throw toShardTransferError(e, action, this.address);
      }
      if (expectedBytes !== undefined && written !== expectedBytes) {
        throw new ShardFileError(`${action}: received ${written} bytes, expected ${expectedBytes}`, destFile, 'write');
      }
      try {
        await fh.close();
        await rename(tmp, destFile);
      } catch (e) {
        throw new ShardFileError(`${action}: cannot write ${destFile}: ${(e as Error).message}`, destFile, 'write', { cause: e });
      }
      completed = true;
      return written;
    } finally {
      clearTimeout(idle);
      await fh.close().catch(() => undefined);
      if (!completed) await rm(tmp, { force: true });
    }
  }

  /** The serving status of `service` ("" = the whole server); NOT_FOUND for an unknown service. */
  health(service = ''): Promise<ServingStatus> {
    return new Promise((resolve, reject) => {
      this.healthClient.Check({ service }, { deadline: Date.now() + this.timeouts.healthMs }, (err, res) => {
        if (err) reject(toShardTransferError(err, `health check of "${service}"`, this.address));
        else resolve(res!.status);
      });
    });
  }

  /** Start connecting without waiting (the first call then need not wait for it); never throws. */
  connect(): void {
    try {
      getClientChannel(this.client).getConnectivityState(true);
    } catch {
      /* the next call reports what is wrong */
    }
  }

  close(): void {
    this.client.close();
  }

  private deadline(bytes: number): number {
    return Date.now() + this.timeouts.streamBaseMs + (bytes / this.timeouts.minBytesPerSecond) * 1000;
  }
}

/** The shard's size, digest and data range: from the known data buffer and its hash, else by decoding the shard. */
function uploadDigest(chunks: readonly Uint8Array[], data?: { bytes: Uint8Array; sha256: string }): { size: number; sha256: string; range: DataRange } {
  const size = chunks.reduce((s, c) => s + c.byteLength, 0);
  const range = data ? dataRangeIn(chunks, data.bytes) : null;
  if (!range) {
    const { sha256, range: found } = digestShard(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
    return { size, sha256, range: found };
  }
  // the data's bytes are not hashed again: its SHA-256 is the one the threads computed
  const d = new ShardDigest(size, range, data!.sha256);
  for (const c of chunks) d.update(c);
  return { size, sha256: d.digest(), range };
}

/** In-memory shard bytes as messages of at most MAX_CHUNK_BYTES (views, no copies). */
function* sliceChunks(chunks: readonly Uint8Array[]): Generator<Buffer> {
  for (const c of chunks) {
    for (let off = 0; off < c.byteLength; off += MAX_CHUNK_BYTES) {
      const n = Math.min(MAX_CHUNK_BYTES, c.byteLength - off);
      yield Buffer.from(c.buffer, c.byteOffset + off, n);
    }
  }
}

function onceDrained(call: ClientWritableStream<UploadShardRequest>): Promise<void> {
  return new Promise((resolve) => call.once('drain', resolve));
}
