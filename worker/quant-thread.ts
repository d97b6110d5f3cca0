// Entry of a quantization worker thread: loads the kernel once, keeps its read buffers, and
// serves piece operations posted by the ThreadPool. Results and errors go back by message.

import { parentPort } from 'node:worker_threads';
import { serializeError } from '../core/errors.js';
import { statsToQuality } from '../core/quant/layer-stats.js';
import { selectKernel } from '../native/kernels.js';
import { columnAbsMaxPiece, passthroughLayer, quantizePiece, writeShard } from './piece-ops.js';
import { RowReader, zeroTimings } from '../core/model/row-reader.js';
import type { PieceRequest, PieceResponse } from './thread-protocol.js';

const { kernel } = selectKernel();
const reader = new RowReader();

async function handle(req: PieceRequest): Promise<PieceResponse> {
  const timings = zeroTimings();
  switch (req.op) {
    case 'colabsmax':
      return { id: req.id, ok: true, timings, colAbsMax: await columnAbsMaxPiece(kernel, reader, req.loc, req.rowStart, req.rowEnd, timings) };
    case 'quantize':
      return { id: req.id, ok: true, timings, nonFinite: await quantizePiece(kernel, reader, req.args, timings) };
    case 'passthrough': {
      const r = await passthroughLayer(reader, req.loc, req.rows, timings);
      const q = statsToQuality(r.stats);
      const record = { ...req.record, data: r.data, quant_type: r.quantType, sqnr_db: q.sqnrDb, cosine: q.cosine };
      return { id: req.id, ok: true, timings, shard: await writeShard(record, req.shardPath, timings), quantType: r.quantType, sqnrDb: q.sqnrDb, cosine: q.cosine };
    }
    case 'shard':
      return { id: req.id, ok: true, timings, shard: await writeShard(req.record, req.shardPath, timings) };
  }
}

parentPort!.on('message', (req: PieceRequest) => {
  handle(req).then(
    (res) => parentPort!.postMessage(res, res.ok && 'colAbsMax' in res && res.colAbsMax ? [res.colAbsMax.buffer as ArrayBuffer] : []),
    (e) => parentPort!.postMessage({ id: req.id, ok: false, error: serializeError(e) } satisfies PieceResponse),
  );
});
parentPort!.postMessage({ ready: true, kernel: kernel.variant });
