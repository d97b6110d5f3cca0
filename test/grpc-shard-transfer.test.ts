import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import http2, { type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import { join } from 'node:path';
import { credentials, status as Status, type ServiceError } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ShardServer, shardPath, type ShardLayerSource, type StagedShard, type UploadOutcome } from '../coordinator/cluster/shard-server.js';
import { encodeShard, frameShard } from '../core/format/arrow-file.js';
import { digestChunks, digestShard, type DataRange } from '../core/format/shard-digest.js';
import type { LayerRecord } from '../core/format/layer-schema.js';
import { ShardFileError, ShardTransferError, TlsConfigError } from '../core/grpc/errors.js';
import { encodeMessage } from '../core/grpc/h2-framing.js';
import { GRPC_MESSAGE_LIMITS, MAX_CHUNK_BYTES, grpcServices, type HealthCheckResponse, type UploadShardRequest, type UploadShardResponse } from '../core/grpc/proto.js';
import { loadClientTls, loadServerTls } from '../core/grpc/tls.js';
import { ShardClient } from '../worker/cluster/shard-client.js';
import { generateTestCerts, type TestCerts } from './helpers/certs.js';
import { tempDir } from './helpers/models.js';

const MiB = 1024 * 1024;
const JOB = 'job-1';
const PLAN = 'plan-abc';
const { dir, cleanup } = tempDir('aq-grpc-');
const stageDir = join(dir, 'stage');
const modelFile = join(dir, 'model.bin');
const modelBytes = randomBytes(6 * MiB + 100);
writeFileSync(modelFile, modelBytes);

const layerName = (i: number) => `model.layers.${i}.mlp.up_proj.weight`;
const MAX_SHARD = 8 * MiB;
/** what the job's plan check says of a decoded row (none by default; one test refuses a layer) */
let planCheck: (r: LayerRecord) => void = () => undefined;
const source = (i: number, dataStart: number, byteLength: number): ShardLayerSource => ({
  planHash: PLAN, name: layerName(i), file: modelFile, dataStart, byteLength, maxShardBytes: MAX_SHARD, check: (r) => planCheck(r),
});
// layer 20: a source range larger than 4 MiB, for DownloadTensor
const layers = new Map<number, ShardLayerSource>(Array.from({ length: 20 }, (_, i) => [i, source(i, 0, 64)] as const));
layers.set(20, source(20, 4097, 5 * MiB + 3));
/** the layer the job says it writes into its output itself (no stage file) */
const DIRECT_LAYER = 14;
/** the job's reorder window: how many bytes it still has room for, and what is reserved */
const memory = { room: Infinity, reserved: 0 };

const staged: { index: number; shard: StagedShard }[] = [];
/** what the server wrote through the direct writer of DIRECT_LAYER (its record batch message, in pieces) */
const directWrites: { at: number; bytes: Buffer }[] = [];
let directDone = false;
/** called when the server looks a layer up, i.e. once it has read an upload's header */
let onLookup: ((index: number) => void) | null = null;

function record(i: number, dataBytes: number): LayerRecord {
  const data = randomBytes(dataBytes);
  return {
    layer_name: layerName(i), layer_index: i, shape: [1, dataBytes * 2], source_dtype: 'BF16', quant_type: 'int4', bit_width: 4,
    method: 'base', group_size: 128, data, scales: new Uint16Array(8).fill(0x3c00), zero_points: new Uint16Array(8),
    equalization_scales: null, act_bit_width: null, time_group_params: null, sqnr_db: 21.5, cosine: Math.fround(0.995),
    planned_bit_width: 4, notes: null, data_sha256: createHash('sha256').update(data).digest('hex'),
  };
}

/** A shard for layer `i` (its content may claim another layer): its bytes and SHA-256. */
function shardOf(i: number, dataBytes = 4096, contentLayer = i): { bytes: Buffer; sha256: string; range: DataRange } {
  const bytes = Buffer.from(encodeShard(record(contentLayer, dataBytes)));
  const { sha256, range } = digestShard(bytes);
  return { bytes, sha256, range };
}

/** The digest fields of an upload header for `shard` (as ShardClient sends them). */
const digestOf = (shard: { sha256: string; range: DataRange }) => ({ sha256: shard.sha256, data_offset: shard.range.offset, data_length: shard.range.length });

const header = (i: number, extra: Partial<{ job_id: string; plan_hash: string }> = {}) => ({ job_id: JOB, layer_index: i, plan_hash: PLAN, worker_id: 'w1', ...extra });

/** Everything in the stage directory that is not a staged shard (temporary files). */
const leftovers = () => readdirSync(stageDir).filter((n) => !/^\d+\.shard$/.test(n));
const stagedNames = () => readdirSync(stageDir).filter((n) => /^\d+\.shard$/.test(n)).sort();

let server: ShardServer;
let address: string;
let client: ShardClient;

/** A plain generated client: sends exactly the given messages. */
function rawUpload(messages: UploadShardRequest[]): Promise<ServiceError | UploadShardResponse> {
  const raw = new (grpcServices().shardTransfer.Client)(address, credentials.createInsecure(), GRPC_MESSAGE_LIMITS);
  return new Promise((resolve) => {
    const call = raw.UploadShard({}, (err, res) => {
      raw.close();
      resolve(err ?? res!);
    });
    call.on('error', () => undefined);
    for (const m of messages) call.write(m);
    call.end();
  });
}

function chunks(bytes: Buffer, size = MAX_CHUNK_BYTES): UploadShardRequest[] {
  const out: UploadShardRequest[] = [];
  for (let off = 0; off < bytes.length; off += size) out.push({ chunk: bytes.subarray(off, off + size) });
  return out;
}

async function expectTransferError(p: Promise<unknown>, codeName: string, message: RegExp): Promise<ShardTransferError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ShardTransferError);
  const e = err as ShardTransferError;
  expect(e.codeName).toBe(codeName);
  expect(e.message).toMatch(message);
  return e;
}

function expectStatus(res: ServiceError | UploadShardResponse, codeName: string, details: RegExp): void {
  expect(res).toBeInstanceOf(Error);
  const e = res as ServiceError;
  expect(new ShardTransferError('', e.code, e.details, address).codeName).toBe(codeName);
  expect(e.details).toMatch(details);
}

let certs: TestCerts;

beforeAll(async () => {
  mkdirSync(stageDir);
  server = new ShardServer();
  server.registerJob(JOB, {
    stageDir,
    allowDownload: true,
    layer: (i) => {
      onLookup?.(i);
      return layers.get(i);
    },
    reserveMemory: (bytes) => {
      if (bytes > memory.room) return null;
      memory.room -= bytes;
      memory.reserved += bytes;
      return new Uint8Array(bytes);
    },
    releaseMemory: (buffer) => {
      memory.room += buffer.byteLength;
      memory.reserved -= buffer.byteLength;
    },
    directWriter: (i) => (i === DIRECT_LAYER && !directDone ? { write: async (pieces, at) => void directWrites.push({ at, bytes: Buffer.concat(pieces) }) } : null),
    recordedHash: () => undefined,
    onStaged: (index, shard) => {
      staged.push({ index, shard });
    },
  });
  ({ address } = await server.start('127.0.0.1:0'));
  client = new ShardClient(address);
  certs = await generateTestCerts();
});

afterAll(async () => {
  client?.close();
  await server?.stop();
  await certs?.cleanup();
  cleanup();
});

describe('grpc shards', () => {
  test('grpc shards - a shard larger than 4 MiB is staged byte-identical and reported once', async () => {
    const shard = shardOf(0, 5 * MiB);
    expect(shard.bytes.length).toBeGreaterThan(4 * MiB);
    const res = await client.upload({ ...header(0), kernel: 'avx2', threads: 3, read_ms: 1.5, kernel_ms: 20, hash_ms: 2, write_ms: 0.25 }, [shard.bytes]);
    expect(res).toEqual({ duplicate: false, receivedBytes: shard.bytes.length });
    expect(Buffer.compare(readFileSync(shardPath(stageDir, 0)), shard.bytes)).toBe(0);
    expect(staged).toHaveLength(1);
    const { index, shard: info } = staged[0]!;
    expect(index).toBe(0);
    expect(info).toMatchObject({ path: shardPath(stageDir, 0), sha256: shard.sha256, size: shard.bytes.length, workerId: 'w1' });
    expect(info.record.layer_index).toBe(0);
    expect(info.record.layer_name).toBe(layerName(0));
    expect(info.maker).toEqual({ kernel: 'avx2', threads: 3, timings: { readMs: 1.5, kernelMs: 20, hashMs: 2, writeMs: 0.25 } });
    expect(info.record.data.byteLength).toBe(5 * MiB);
    // received into one buffer the job now owns (its reservation stays until the job releases it)
    expect(Buffer.compare(Buffer.from(info.bytes!), shard.bytes)).toBe(0);
    expect(memory.reserved).toBe(shard.bytes.length);
    expect(leftovers()).toEqual([]);

    // the same shard again: a harmless duplicate
    const again = await client.upload({ ...header(0), worker_id: 'w2' }, [shard.bytes]);
    expect(again).toEqual({ duplicate: true, receivedBytes: shard.bytes.length });
    expect(staged).toHaveLength(1);
    expect(memory.reserved).toBe(shard.bytes.length); // the duplicate's reservation was given back

    // another shard for the same layer: refused, the staged one untouched
    const other = shardOf(0, 1024);
    await expectTransferError(client.upload(header(0), [other.bytes]), 'FAILED_PRECONDITION', /layer 0 of job "job-1".*a different shard is already staged/);
    expect(Buffer.compare(readFileSync(shardPath(stageDir, 0)), shard.bytes)).toBe(0);
    expect(staged).toHaveLength(1);
    expect(leftovers()).toEqual([]);
    memory.reserved = 0;
  });

  test('grpc shards - without room in the reorder window a shard is staged from its file alone', async () => {
    memory.room = MiB;
    try {
      const shard = shardOf(9, 2 * MiB);
      expect(await client.upload(header(9), [shard.bytes])).toEqual({ duplicate: false, receivedBytes: shard.bytes.length });
      const info = staged.find((s) => s.index === 9)!.shard;
      expect(info.bytes).toBeNull();
      expect(info.record.data.byteLength).toBe(2 * MiB);
      expect(Buffer.compare(readFileSync(shardPath(stageDir, 9)), shard.bytes)).toBe(0);
      expect(memory).toEqual({ room: MiB, reserved: 0 });
    } finally {
      memory.room = Infinity;
      // later tests count the staged layers without this one
      rmSync(shardPath(stageDir, 9), { force: true });
      staged.splice(staged.findIndex((s) => s.index === 9), 1);
    }
  });

  test('grpc shards - a layer next in the output goes through its direct writer as it arrives: no stage file, no kept bytes', async () => {
    const shard = shardOf(DIRECT_LAYER, 3 * MiB);
    expect(await client.upload(header(DIRECT_LAYER), [shard.bytes])).toEqual({ duplicate: false, receivedBytes: shard.bytes.length });
    directDone = true;
    const info = staged.find((s) => s.index === DIRECT_LAYER)!.shard;
    expect(info.path).toBeNull();
    expect(info.bytes).toBeNull();
    // the pieces, in order and without gaps, are exactly the shard's record batch message
    const frame = frameShard(shard.bytes, shard.bytes.length);
    expect(directWrites.length).toBeGreaterThan(1); // written chunk by chunk, not at the end
    let at = 0;
    for (const w of directWrites) (expect(w.at).toBe(at), (at += w.bytes.length));
    expect(Buffer.compare(Buffer.concat(directWrites.map((w) => w.bytes)), shard.bytes.subarray(frame.offset, frame.offset + frame.length))).toBe(0);
    expect(info.frame).toEqual({ metaDataLength: frame.metaDataLength, bodyLength: frame.bodyLength });
    expect(stagedNames()).not.toContain(`${DIRECT_LAYER}.shard`);
    expect(leftovers()).toEqual([]);
    // the same shard again is a duplicate (the server remembers its hash without a file)
    expect(await client.upload(header(DIRECT_LAYER), [shard.bytes])).toEqual({ duplicate: true, receivedBytes: shard.bytes.length });
    staged.splice(staged.findIndex((s) => s.index === DIRECT_LAYER), 1);
    memory.reserved = 0;
    memory.room = Infinity;
  });

  test('grpc shards - a header declaring more than the plan allows is INVALID_ARGUMENT before any byte is kept', async () => {
    const res = await rawUpload([{ header: { ...header(10), size: MAX_SHARD + 1, sha256: 'ab'.repeat(32) } }]);
    expectStatus(res, 'INVALID_ARGUMENT', new RegExp(`layer 10 of job "job-1".*declares ${MAX_SHARD + 1} bytes; the job's plan allows at most ${MAX_SHARD} for this layer`));
    expect(memory.reserved).toBe(0);
    expect(stagedNames()).not.toContain('10.shard');
    expect(leftovers()).toEqual([]);
  });

  test('grpc shards - a shard the plan does not produce is FAILED_PRECONDITION naming the field', async () => {
    planCheck = (r) => {
      if (r.bit_width !== 8) throw new Error(`bit_width is ${r.bit_width}, the job's plan gives 8`);
    };
    try {
      const shard = shardOf(11, 4096);
      await expectTransferError(client.upload(header(11), [shard.bytes]), 'FAILED_PRECONDITION', /layer 11 of job "job-1".*does not match the job's plan: bit_width is 4, the job's plan gives 8/);
      expect(stagedNames()).not.toContain('11.shard');
      expect(memory.reserved).toBe(0);
      expect(leftovers()).toEqual([]);
    } finally {
      planCheck = () => undefined;
    }
  });

  test('grpc shards - a wrong declared SHA-256 is DATA_LOSS and nothing is staged', async () => {
    const shard = shardOf(1, 2 * MiB);
    const res = await rawUpload([{ header: { ...header(1), size: shard.bytes.length, ...digestOf(shard), sha256: 'ab'.repeat(32) } }, ...chunks(shard.bytes)]);
    expectStatus(res, 'DATA_LOSS', new RegExp(`have digest ${shard.sha256}, the header declared ${'ab'.repeat(32)}`));
    expect(stagedNames()).toEqual(['0.shard']);
    expect(leftovers()).toEqual([]);
    expect(staged).toHaveLength(1);
  });

  test('grpc shards - a header whose data range is not the shard\'s data is DATA_LOSS, even with the digest that range gives', async () => {
    const shard = shardOf(1, 2 * MiB);
    // a digest honestly computed over a range that is not the data buffer: the bytes arrive intact,
    // but the data's hash would come from the wrong bytes
    const lying = { offset: shard.range.offset + 8, length: shard.range.length - 8 };
    const sha256 = digestChunks([shard.bytes], lying);
    const res = await rawUpload([{ header: { ...header(1), size: shard.bytes.length, sha256, data_offset: lying.offset, data_length: lying.length } }, ...chunks(shard.bytes)]);
    expectStatus(res, 'DATA_LOSS', new RegExp(`the header puts the data at \\[${lying.offset}, ${lying.offset + lying.length}\\); the shard's data is \\[${shard.range.offset}, ${shard.range.offset + shard.range.length}\\)`));
    const outside = await rawUpload([{ header: { ...header(1), size: 100, sha256: 'ab'.repeat(32), data_offset: 90, data_length: 20 } }]);
    expectStatus(outside, 'INVALID_ARGUMENT', /data range \[90, 110\) is not within the shard's 100 bytes/);
    expect(stagedNames()).toEqual(['0.shard']);
    expect(leftovers()).toEqual([]);
  });

  test('grpc shards - a stream shorter than the declared size is DATA_LOSS', async () => {
    const shard = shardOf(1, 2 * MiB);
    const res = await rawUpload([{ header: { ...header(1), size: shard.bytes.length + 10, ...digestOf(shard) } }, ...chunks(shard.bytes)]);
    expectStatus(res, 'DATA_LOSS', new RegExp(`received ${shard.bytes.length} bytes, the header declared ${shard.bytes.length + 10}`));
    expect(stagedNames()).toEqual(['0.shard']);
    expect(leftovers()).toEqual([]);
  });

  test('grpc shards - a shard holding another layer is DATA_LOSS', async () => {
    const shard = shardOf(1, 4096, 2);
    await expectTransferError(
      client.upload(header(1), [shard.bytes]),
      'DATA_LOSS',
      new RegExp(`the shard holds layer 2 "${layerName(2)}", expected layer 1 "${layerName(1)}"`),
    );
    await expectTransferError(client.upload(header(1), [randomBytes(3000)]), 'DATA_LOSS', /not a valid shard/);
    expect(stagedNames()).toEqual(['0.shard']);
    expect(leftovers()).toEqual([]);
  });

  test('grpc shards - a shard made for another plan is FAILED_PRECONDITION', async () => {
    // large, so that the refusal (after the header) arrives while the client is still sending
    const shard = shardOf(1, 5 * MiB);
    const e = await expectTransferError(
      client.upload(header(1, { plan_hash: 'plan-old' }), [shard.bytes]),
      'FAILED_PRECONDITION',
      /made for plan plan-old, the job's plan is plan-abc/,
    );
    expect(e.address).toBe(address);
    expect(e.code).toBe(9);
    expect(stagedNames()).toEqual(['0.shard']);
  });

  test('grpc shards - an unknown job or layer is NOT_FOUND', async () => {
    const shard = shardOf(1);
    await expectTransferError(client.upload(header(1, { job_id: 'nope' }), [shard.bytes]), 'NOT_FOUND', /unknown job "nope"/);
    await expectTransferError(client.upload(header(99), [shard.bytes]), 'NOT_FOUND', /job "job-1" has no layer 99/);
    expect(leftovers()).toEqual([]);
  });

  test('grpc shards - a chunk over 1 MiB or a missing header is INVALID_ARGUMENT', async () => {
    const shard = shardOf(1, 2 * MiB);
    const big = await rawUpload([{ header: { ...header(1), size: shard.bytes.length, ...digestOf(shard) } }, ...chunks(shard.bytes, MAX_CHUNK_BYTES + 1)]);
    expectStatus(big, 'INVALID_ARGUMENT', new RegExp(`chunk 1 holds ${MAX_CHUNK_BYTES + 1} bytes, more than the ${MAX_CHUNK_BYTES} allowed`));
    const headless = await rawUpload(chunks(shard.bytes));
    expectStatus(headless, 'INVALID_ARGUMENT', /first message of an upload must carry the header/);
    const empty = await rawUpload([]);
    expectStatus(empty, 'INVALID_ARGUMENT', /ended before its header/);
    const badSha = await rawUpload([{ header: { ...header(1), size: 10, sha256: 'XYZ' } }]);
    expectStatus(badSha, 'INVALID_ARGUMENT', /sha256 "XYZ" is not 64 lowercase hex digits/);
    const longKernel = await rawUpload([{ header: { ...header(1), size: 10, sha256: 'ab'.repeat(32), kernel: 'k'.repeat(65) } }]);
    expectStatus(longKernel, 'INVALID_ARGUMENT', /kernel is 65 characters, at most 64 allowed/);
    const badTime = await rawUpload([{ header: { ...header(1), size: 10, sha256: 'ab'.repeat(32), kernel_ms: -1 } }]);
    expectStatus(badTime, 'INVALID_ARGUMENT', /kernel_ms -1 is not a duration in milliseconds/);
    expect(stagedNames()).toEqual(['0.shard']);
    expect(leftovers()).toEqual([]);
  });

  test('grpc shards - concurrent uploads of different layers are all staged', async () => {
    const shards = [3, 4, 5].map((i) => ({ i, ...shardOf(i, 2 * MiB + i) }));
    const results = await Promise.all(shards.map((s) => client.upload(header(s.i), [s.bytes])));
    expect(results).toEqual(shards.map((s) => ({ duplicate: false, receivedBytes: s.bytes.length })));
    for (const s of shards) expect(Buffer.compare(readFileSync(shardPath(stageDir, s.i)), s.bytes)).toBe(0);
    expect(staged.map((s) => s.index).sort()).toEqual([0, 3, 4, 5]);

    // two workers racing with the same layer (a redelivery): staged once, the other is a duplicate
    const same = shardOf(7, 2 * MiB);
    const race = await Promise.all([client.upload(header(7), [same.bytes]), client.upload({ ...header(7), worker_id: 'w2' }, [same.bytes])]);
    expect(race.map((r) => r.duplicate).sort()).toEqual([false, true]);
    expect(staged.filter((s) => s.index === 7)).toHaveLength(1);
    expect(Buffer.compare(readFileSync(shardPath(stageDir, 7)), same.bytes)).toBe(0);
    expect(leftovers()).toEqual([]);
  });

  test('grpc shards - an upload of a later layer waits for its turn, so both go straight into the output in order', async () => {
    const ordered = new ShardServer({ orderWaitMs: 60_000, orderGapMs: 60_000 });
    const orderedStage = join(dir, 'ordered');
    const output: { layer: number; at: number; bytes: Buffer }[] = [];
    let next = 0;
    const seen: StagedShard[] = [];
    ordered.registerJob(JOB, {
      stageDir: orderedStage, layer: (i) => layers.get(i), reserveMemory: (n) => new Uint8Array(n), releaseMemory: () => undefined, recordedHash: () => undefined,
      nextLayer: () => next,
      directWriter: (i) => (i === next ? { write: async (pieces, at) => void output.push({ layer: i, at, bytes: Buffer.concat(pieces) }) } : null),
      onStaged: (i, shard) => {
        seen.push(shard);
        if (shard.path === null) next = i + 1;
      },
    });
    const { address: at } = await ordered.start('127.0.0.1:0');
    const c = new ShardClient(at);
    try {
      const [s0, s1] = [shardOf(0, 2 * MiB), shardOf(1, 2 * MiB + 8)];
      const waiting = once(ordered, 'waiting');
      const later = c.upload(header(1), [s1.bytes]);
      expect((await waiting)[0]).toEqual({ jobId: JOB, layerIndex: 1, nextLayer: 0 });
      expect(output).toEqual([]); // layer 1 is held (flow control), not received
      await c.upload(header(0), [s0.bytes]);
      await later;
      expect(seen.map((x) => x.path)).toEqual([null, null]);
      // every piece of layer 0 was written before the first of layer 1
      const first1 = output.findIndex((o) => o.layer === 1);
      expect(first1).toBeGreaterThan(0);
      expect(output.slice(first1).every((o) => o.layer === 1)).toBe(true);
      for (const [i, s] of [s0, s1].entries()) {
        const f = frameShard(s.bytes, s.bytes.length);
        const got = Buffer.concat(output.filter((o) => o.layer === i).map((o) => o.bytes));
        expect(Buffer.compare(got, s.bytes.subarray(f.offset, f.offset + f.length))).toBe(0);
      }
      expect(existsSync(orderedStage) ? readdirSync(orderedStage) : []).toEqual([]);
    } finally {
      c.close();
      await ordered.stop();
    }
  });

  test('grpc shards - an upload whose turn does not come within orderGapMs is staged instead', async () => {
    const ordered = new ShardServer({ orderWaitMs: 200, orderGapMs: 50 });
    const orderedStage = join(dir, 'gap');
    const seen: { index: number; shard: StagedShard }[] = [];
    ordered.registerJob(JOB, {
      stageDir: orderedStage, layer: (i) => layers.get(i), reserveMemory: () => null, releaseMemory: () => undefined, recordedHash: () => undefined,
      nextLayer: () => 0, directWriter: () => null, onStaged: (index, shard) => void seen.push({ index, shard }),
    });
    const { address: at } = await ordered.start('127.0.0.1:0');
    const c = new ShardClient(at);
    try {
      const s3 = shardOf(3, MiB);
      const waiting = once(ordered, 'waiting');
      expect(await c.upload(header(3), [s3.bytes])).toEqual({ duplicate: false, receivedBytes: s3.bytes.length });
      expect((await waiting)[0]).toMatchObject({ layerIndex: 3, nextLayer: 0 });
      expect(seen.map((x) => [x.index, x.shard.path])).toEqual([[3, shardPath(orderedStage, 3)]]);
      expect(Buffer.compare(readFileSync(shardPath(orderedStage, 3)), s3.bytes)).toBe(0);
    } finally {
      c.close();
      await ordered.stop();
    }
  });

  test('grpc shards - beyond maxConcurrentUploads an upload waits for a slot, then RESOURCE_EXHAUSTED', async () => {
    const limited = new ShardServer({ maxConcurrentUploads: 1, uploadSlotWaitMs: 300 });
    const lookups: number[] = [];
    const limitedStage = join(dir, 'limited');
    limited.registerJob(JOB, {
      stageDir: limitedStage, layer: (i) => (lookups.push(i), layers.get(i)), reserveMemory: (n) => new Uint8Array(n), releaseMemory: () => undefined, recordedHash: () => undefined, onStaged: () => undefined,
    });
    const { address: at } = await limited.start('127.0.0.1:0');
    const c = new ShardClient(at);
    const raw = new (grpcServices().shardTransfer.Client)(at, credentials.createInsecure(), GRPC_MESSAGE_LIMITS);
    try {
      // the first upload takes the one slot and holds it (header and one chunk, then nothing)
      const held = shardOf(12, 2 * MiB);
      const call = raw.UploadShard({}, () => undefined);
      call.on('error', () => undefined);
      const holding = once(limited, 'upload');
      call.write({ header: { ...header(12), size: held.bytes.length, ...digestOf(held) } });
      call.write(chunks(held.bytes)[0]!);
      await new Promise<void>((resolve) => {
        const poll = () => (lookups.includes(12) ? resolve() : setImmediate(poll));
        poll();
      });
      const waiting = shardOf(13, 4096);
      await expectTransferError(c.upload(header(13), [waiting.bytes]), 'RESOURCE_EXHAUSTED', /layer 13 of job "job-1".*no upload slot freed up within 300 ms \(1 uploads at once\)/);
      call.cancel();
      await holding;
      expect(await c.upload(header(13), [waiting.bytes])).toEqual({ duplicate: false, receivedBytes: waiting.bytes.length });
    } finally {
      raw.close();
      c.close();
      await limited.stop();
    }
  });

  test('grpc shards - a client that cancels mid-stream leaves nothing behind; it counts as in flight until then', async () => {
    const shard = shardOf(6, 3 * MiB);
    const raw = new (grpcServices().shardTransfer.Client)(address, credentials.createInsecure(), GRPC_MESSAGE_LIMITS);
    const ended = once(server, 'upload') as Promise<[UploadOutcome]>;
    const headerRead = new Promise<void>((resolve) => (onLookup = (i) => i === 6 && resolve()));
    const call = raw.UploadShard({}, () => undefined);
    call.on('error', () => undefined);
    call.write({ header: { ...header(6), size: shard.bytes.length, ...digestOf(shard) } });
    call.write(chunks(shard.bytes)[0]!);
    await headerRead;
    onLookup = null;
    expect(server.uploadsInFlight).toBe(1);
    call.cancel();
    const [outcome] = await ended;
    raw.close();
    expect(outcome).toMatchObject({ jobId: JOB, layerIndex: 6, outcome: 'cancelled' });
    expect(server.uploadsInFlight).toBe(0);
    expect(stagedNames()).not.toContain('6.shard');
    expect(leftovers()).toEqual([]);
  });

  test('grpc shards - a tensor larger than 4 MiB downloads as the file byte range', async () => {
    const dest = join(dir, 'dl', 'tensor.bin');
    mkdirSync(join(dir, 'dl'));
    const layer = layers.get(20)!;
    const n = await client.download(JOB, 20, dest, layer.byteLength);
    expect(n).toBe(layer.byteLength);
    expect(Buffer.compare(readFileSync(dest), modelBytes.subarray(layer.dataStart, layer.dataStart + layer.byteLength))).toBe(0);
    await expectTransferError(client.download(JOB, 99, join(dir, 'dl', 'x.bin')), 'NOT_FOUND', /download of layer 99 of job "job-1".*has no layer 99/);
    await expectTransferError(client.download('nope', 0, join(dir, 'dl', 'x.bin')), 'NOT_FOUND', /unknown job "nope"/);
    expect(readdirSync(join(dir, 'dl'))).toEqual(['tensor.bin']);
  });

  test('grpc shards - downloads only for a job started with allowDownload; more bytes than expected are cut off', async () => {
    server.registerJob('job-nodl', { stageDir, layer: (i) => layers.get(i), onStaged: () => undefined });
    try {
      await expectTransferError(client.download('job-nodl', 20, join(dir, 'nodl.bin')), 'PERMISSION_DENIED', /download of layer 20 of job "job-nodl": the job was not started with --allow-download/);
    } finally {
      server.unregisterJob('job-nodl');
    }
    const err = await client.download(JOB, 20, join(dir, 'short.bin'), 128).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ShardFileError);
    expect((err as Error).message).toMatch(/download of layer 20 of job "job-1": received more than the expected 128 bytes \(\d+ so far\)/);
    expect(existsSync(join(dir, 'short.bin'))).toBe(false);
    expect(readdirSync(dir).filter((f) => f.startsWith('short.bin'))).toEqual([]);
  });

  test('grpc shards - health reports SERVING, NOT_FOUND for an unknown service, NOT_SERVING after setServing(false)', async () => {
    expect(await client.health()).toBe('SERVING');
    expect(await client.health('arrowquant.v1.ShardTransfer')).toBe('SERVING');
    await expectTransferError(client.health('nope.Service'), 'NOT_FOUND', /health check of "nope.Service".*unknown service "nope.Service"/);

    const raw = new (grpcServices().health.Client)(address, credentials.createInsecure());
    const watch = raw.Watch({ service: '' });
    watch.on('error', () => undefined);
    const seen: string[] = [];
    const twoUpdates = new Promise<void>((resolve) => {
      watch.on('data', (r: HealthCheckResponse) => {
        seen.push(r.status);
        if (seen.length === 1) server.setServing(false);
        if (seen.length === 2) resolve();
      });
    });
    await twoUpdates;
    expect(seen).toEqual(['SERVING', 'NOT_SERVING']);
    expect(await client.health()).toBe('NOT_SERVING');
    const list = await new Promise((resolve, reject) => raw.List({}, {}, (err, res) => (err ? reject(err) : resolve(res))));
    expect(list).toEqual({ statuses: { '': { status: 'NOT_SERVING' }, 'arrowquant.v1.ShardTransfer': { status: 'NOT_SERVING' } } });
    watch.cancel();
    raw.close();
    server.setServing(true);
    expect(await client.health()).toBe('SERVING');
  });

  test('grpc shards - TLS: the right CA connects, an unrelated CA is refused', async () => {
    const tlsServer = new ShardServer({ tls: loadServerTls({ certFile: certs.server.certFile, keyFile: certs.server.keyFile }) });
    tlsServer.registerJob(JOB, { stageDir, allowDownload: true, layer: (i) => layers.get(i), reserveMemory: () => null, releaseMemory: () => undefined, recordedHash: () => undefined, onStaged: () => undefined });
    const { port } = await tlsServer.start('127.0.0.1:0');
    const good = new ShardClient(`127.0.0.1:${port}`, loadClientTls({ caFile: certs.ca.certFile }));
    const byName = new ShardClient(`127.0.0.1:${port}`, loadClientTls({ caFile: certs.ca.certFile, serverNameOverride: 'localhost' }));
    const wrong = new ShardClient(`127.0.0.1:${port}`, loadClientTls({ caFile: certs.otherCa.certFile }));
    const plain = new ShardClient(`127.0.0.1:${port}`);
    try {
      expect(await good.health()).toBe('SERVING');
      expect(await byName.health()).toBe('SERVING');
      const dest = join(dir, 'tls-tensor.bin');
      expect(await good.download(JOB, 1, dest)).toBe(64);
      expect(Buffer.compare(readFileSync(dest), modelBytes.subarray(0, 64))).toBe(0);
      const e = await expectTransferError(wrong.health(), 'UNAVAILABLE', new RegExp(`health check of "" to 127.0.0.1:${port} failed: UNAVAILABLE`));
      expect(e.retryable).toBe(true);
      await expectTransferError(plain.health(), 'UNAVAILABLE', /UNAVAILABLE/);
    } finally {
      for (const c of [good, byName, wrong, plain]) c.close();
      await tlsServer.stop();
    }
  });

  test('grpc shards - mutual TLS: a client without a certificate is refused, one with it works', async () => {
    const tlsServer = new ShardServer({
      tls: loadServerTls({ certFile: certs.server.certFile, keyFile: certs.server.keyFile, clientCaFile: certs.ca.certFile }),
    });
    const { port } = await tlsServer.start('127.0.0.1:0');
    const anonymous = new ShardClient(`127.0.0.1:${port}`, loadClientTls({ caFile: certs.ca.certFile }));
    const known = new ShardClient(`127.0.0.1:${port}`, loadClientTls({ caFile: certs.ca.certFile, certFile: certs.client.certFile, keyFile: certs.client.keyFile }));
    try {
      await expectTransferError(anonymous.health(), 'UNAVAILABLE', /UNAVAILABLE/);
      expect(await known.health()).toBe('SERVING');
    } finally {
      anonymous.close();
      known.close();
      await tlsServer.stop();
    }
  });

  test('grpc shards - TLS files that are missing or do not match fail with TlsConfigError', () => {
    const missing = join(dir, 'missing.pem');
    expect(() => loadServerTls({ certFile: missing, keyFile: certs.server.keyFile })).toThrow(TlsConfigError);
    expect(() => loadServerTls({ certFile: missing, keyFile: certs.server.keyFile })).toThrow(`TLS certFile ${missing} cannot be read: no such file`);
    expect(() => loadServerTls({ certFile: certs.server.certFile, keyFile: certs.client.keyFile })).toThrow(
      new RegExp(`TLS keyFile ${certs.client.keyFile} does not hold a usable private key for ${certs.server.certFile}`),
    );
    const notPem = join(dir, 'not.pem');
    writeFileSync(notPem, 'hello');
    expect(() => loadClientTls({ caFile: notPem })).toThrow(`TLS caFile ${notPem} is not a PEM file (no "-----BEGIN" line)`);
    expect(() => loadClientTls({ certFile: certs.client.certFile })).toThrow(/TLS client keyFile is missing/);
    const thrown = (() => {
      try {
        return loadServerTls({ certFile: certs.server.certFile, keyFile: missing });
      } catch (e) {
        return e;
      }
    })();
    expect(thrown).toBeInstanceOf(TlsConfigError);
    expect(thrown).toMatchObject({ option: 'keyFile', file: missing, exitCode: 2 });
  });
});

// ---- the transport (core/grpc/h2-server.ts) as a raw HTTP/2 client sees it

const UPLOAD_PATH = '/arrowquant.v1.ShardTransfer/UploadShard';
const uploadMethod = () => grpcServices().shardTransfer.definition.UploadShard!;
/** An UploadShard message with its 5-byte gRPC prefix. */
const framed = (m: UploadShardRequest) => encodeMessage(uploadMethod().requestSerialize(m));
/** The framed messages of a whole upload of `shard` for layer `i`, in 64 KiB chunks. */
const framedUpload = (i: number, shard: { bytes: Buffer; sha256: string; range: DataRange }) =>
  Buffer.concat([framed({ header: { ...header(i), size: shard.bytes.length, ...digestOf(shard) } }), ...chunks(shard.bytes, 64 * 1024).map(framed)]);

interface RawAnswer {
  httpStatus: number;
  grpcStatus: number;
  grpcMessage: string;
  /** the status came in the response headers, with no message or trailers */
  trailersOnly: boolean;
  body: Buffer;
}

/** One call from a bare node:http2 client: `writes` as separate writes (each flushed first when `flushEach`). */
async function rawH2(path: string, writes: Buffer[], opts: { headers?: OutgoingHttpHeaders; flushEach?: boolean } = {}): Promise<RawAnswer> {
  const session = http2.connect(`http://${address}`);
  session.on('error', () => undefined);
  try {
    const req = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc+proto', te: 'trailers', ...opts.headers });
    req.on('error', () => undefined);
    let head: IncomingHttpHeaders = {};
    let trailers: IncomingHttpHeaders | null = null;
    const body: Buffer[] = [];
    req.on('response', (h) => (head = h));
    req.on('trailers', (t) => (trailers = t));
    req.on('data', (d: Buffer) => body.push(d));
    const closed = once(req, 'close');
    for (const w of writes) {
      if (opts.flushEach) await new Promise<void>((resolve) => req.write(w, () => resolve()));
      else req.write(w);
    }
    req.end();
    await closed;
    const status = trailers ?? head;
    return {
      httpStatus: Number(head[':status']), grpcStatus: Number(status['grpc-status']), grpcMessage: decodeURI(String(status['grpc-message'] ?? '')),
      trailersOnly: trailers === null && head['grpc-status'] !== undefined, body: Buffer.concat(body),
    };
  } finally {
    session.close();
  }
}

/** Splits `bytes` into pieces cycling through `sizes`. */
function split(bytes: Buffer, sizes: number[]): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0, k = 0; at < bytes.length; k++) {
    const n = sizes[k % sizes.length]!;
    out.push(bytes.subarray(at, at + n));
    at += n;
  }
  return out;
}

describe('grpc h2 transport', () => {
  test('grpc h2 transport - an upload written in small DATA frames (prefixes and lengths split) is staged byte-identical', async () => {
    const shard = shardOf(15, 300 * 1024);
    const pieces = split(framedUpload(15, shard), [3, 1, 4096, 2, 7000]);
    expect(pieces.length).toBeGreaterThan(100);
    const res = await rawH2(UPLOAD_PATH, pieces, { flushEach: true });
    expect(res).toMatchObject({ httpStatus: 200, grpcStatus: 0, trailersOnly: false });
    expect(res.body.readUInt32BE(1)).toBe(res.body.length - 5);
    expect(uploadMethod().responseDeserialize(res.body.subarray(5))).toEqual({ duplicate: false, received_bytes: shard.bytes.length });
    expect(Buffer.compare(readFileSync(shardPath(stageDir, 15)), shard.bytes)).toBe(0);
    expect(leftovers()).toEqual([]);
  });

  test('grpc h2 transport - a whole upload in one write (many messages per DATA frame) is staged byte-identical', async () => {
    const shard = shardOf(16, 200 * 1024);
    const res = await rawH2(UPLOAD_PATH, [framedUpload(16, shard)]);
    expect(res).toMatchObject({ grpcStatus: 0 });
    expect(Buffer.compare(readFileSync(shardPath(stageDir, 16)), shard.bytes)).toBe(0);
  });

  test('grpc h2 transport - a compressed message is INTERNAL (UNIMPLEMENTED with an encoding), an oversize prefix RESOURCE_EXHAUSTED, trailers-only', async () => {
    const shard = shardOf(17);
    const head = framed({ header: { ...header(17), size: shard.bytes.length, ...digestOf(shard) } });
    const compressed = Buffer.from(framed({ chunk: shard.bytes }));
    compressed[0] = 1;
    const rejected = once(server, 'upload') as Promise<[UploadOutcome]>;
    const plain = await rawH2(UPLOAD_PATH, [head, compressed]);
    expect(plain).toMatchObject({ httpStatus: 200, grpcStatus: Status.INTERNAL, trailersOnly: true });
    expect(plain.grpcMessage).toMatch(/^upload of layer 17 of job "job-1" from worker "w1": received a message flagged compressed on a call without grpc-encoding$/);
    expect((await rejected)[0]).toMatchObject({ layerIndex: 17, outcome: 'rejected', code: 'INTERNAL' });
    const gzip = await rawH2(UPLOAD_PATH, [head, compressed], { headers: { 'grpc-encoding': 'gzip' } });
    expect(gzip).toMatchObject({ grpcStatus: Status.UNIMPLEMENTED, grpcMessage: expect.stringMatching(/compressed with unsupported encoding "gzip"$/) });
    const oversize = await rawH2(UPLOAD_PATH, [head, Buffer.from([0, 0, 0x20, 0, 1]), randomBytes(1000)]);
    expect(oversize).toMatchObject({ grpcStatus: Status.RESOURCE_EXHAUSTED, trailersOnly: true });
    expect(oversize.grpcMessage).toMatch(/layer 17 .*: Received message larger than max \(2097153 vs 2097152\)$/);
    expect(stagedNames()).not.toContain('17.shard');
    expect(leftovers()).toEqual([]);
  });

  test('grpc h2 transport - a stream ending inside a message, or a chunk message with another field, is refused saying where', async () => {
    const shard = shardOf(18, 8192);
    const whole = framedUpload(18, shard);
    const truncated = await rawH2(UPLOAD_PATH, [whole.subarray(0, whole.length - 100)]);
    expect(truncated).toMatchObject({ grpcStatus: Status.INTERNAL });
    expect(truncated.grpcMessage).toMatch(/^upload of layer 18 .*: the stream ended after \d+ of a message's \d+ bytes$/);
    const head = framed({ header: { ...header(18), size: shard.bytes.length, ...digestOf(shard) } });
    const extraField = encodeMessage(Buffer.from([0x12, 0x02, 0xaa, 0xbb, 0x18, 0x01]));
    const hostile = await rawH2(UPLOAD_PATH, [head, extraField]);
    expect(hostile).toMatchObject({ grpcStatus: Status.INVALID_ARGUMENT });
    expect(hostile.grpcMessage).toMatch(/layer 18 .*: message 2 declares a chunk of 2 bytes but holds 4 after its length; other or repeated fields are refused$/);
    expect(stagedNames()).not.toContain('18.shard');
    expect(leftovers()).toEqual([]);
  });

  test('grpc h2 transport - a status quoting a huge client field is cut to 2048 characters (fewer when wide), and the client still gets it', async () => {
    // the header check quotes a malformed sha256 whole: the transport cuts the status
    const res = await rawUpload([{ header: { ...header(99), size: 10, sha256: 'X'.repeat(100_000) } }]);
    expectStatus(res, 'INVALID_ARGUMENT', /^upload header: sha256 "X+…$/);
    expect((res as ServiceError).details).toHaveLength(2049);
    const wide = await rawUpload([{ header: { ...header(99), size: 10, sha256: '語'.repeat(5000) } }]);
    expectStatus(wide, 'INVALID_ARGUMENT', /^upload header: sha256 "語+…$/);
    expect((wide as ServiceError).details).toHaveLength(910);
    // a worker_id is bounded before it can be quoted anywhere
    const long = await rawUpload([{ header: { ...header(99), worker_id: 'w'.repeat(100_000), size: 10, sha256: 'ab'.repeat(32) } }]);
    expectStatus(long, 'INVALID_ARGUMENT', /^upload header: worker_id is 100000 characters, at most 256 allowed$/);
  });

  test('grpc h2 transport - an unknown method is UNIMPLEMENTED (trailers-only), a request that is not gRPC gets HTTP 415', async () => {
    const unknown = await rawH2('/arrowquant.v1.ShardTransfer/Nope', [encodeMessage(new Uint8Array(0))]);
    expect(unknown).toMatchObject({ httpStatus: 200, grpcStatus: Status.UNIMPLEMENTED, trailersOnly: true, grpcMessage: 'The server does not implement the method /arrowquant.v1.ShardTransfer/Nope' });
    const notGrpc = await rawH2(UPLOAD_PATH, [], { headers: { 'content-type': 'text/plain' } });
    expect(notGrpc.httpStatus).toBe(415);
    // and the server still serves after both
    expect(await client.health()).toBe('SERVING');
  });
});

describe('grpc h2 transport stop', () => {
  test('grpc h2 transport - stop(graceMs) cuts an upload that does not finish in time: cancelled, nothing left, no new calls', async () => {
    const stopping = new ShardServer();
    let lookedUp!: () => void;
    const receiving = new Promise<void>((resolve) => (lookedUp = resolve));
    stopping.registerJob(JOB, { stageDir, layer: (i) => (lookedUp(), layers.get(i)), reserveMemory: () => null, releaseMemory: () => undefined, recordedHash: () => undefined, onStaged: () => undefined });
    const at = (await stopping.start('127.0.0.1:0')).address;
    const raw = new (grpcServices().shardTransfer.Client)(at, credentials.createInsecure(), GRPC_MESSAGE_LIMITS);
    try {
      const shard = shardOf(19, 2 * MiB);
      const ended = once(stopping, 'upload') as Promise<[UploadOutcome]>;
      const call = raw.UploadShard({}, () => undefined);
      call.on('error', () => undefined);
      call.write({ header: { ...header(19), size: shard.bytes.length, ...digestOf(shard) } });
      call.write(chunks(shard.bytes)[0]!);
      await receiving;
      const t0 = performance.now();
      await stopping.stop(200);
      expect(performance.now() - t0).toBeLessThan(2000);
      expect((await ended)[0]).toMatchObject({ layerIndex: 19, outcome: 'cancelled' });
      expect(stopping.uploadsInFlight).toBe(0);
      expect(stagedNames()).not.toContain('19.shard');
      expect(leftovers()).toEqual([]);
      const after = new ShardClient(at);
      await expectTransferError(after.health(), 'UNAVAILABLE', /health check/);
      after.close();
    } finally {
      raw.close();
      await stopping.stop(0);
    }
  });
});
