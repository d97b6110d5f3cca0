// Entry of a quantization worker thread: loads the kernel once, keeps its read buffers, and
// serves piece operations posted by the ThreadPool. Results and errors go back by message.

import { parentPort } from 'node:worker_threads';
import { serializeError } from '../core/errors.js';
import { selectKernel } from '../native/kernels.js';
import { columnAbsMaxPiece, hashData, passthroughLayer, quantizePiece } from './piece-ops.js';
import { RowReader, zeroTimings } from '../core/model/row-reader.js';
import type { PieceRequest, PieceResponse } from './thread-protocol.js';

const { kernel } = selectKernel();
const reader = new RowReader(true);

async function handle(req: PieceRequest): Promise<PieceResponse> {
  const timings = zeroTimings();
  switch (req.op) {
    case 'colabsmax':
      return { id: req.id, ok: true, timings, colAbsMax: await columnAbsMaxPiece(kernel, reader, req.loc, req.rowStart, req.rowEnd, timings) };
    case 'quantize':
      return { id: req.id, ok: true, timings, nonFinite: await quantizePiece(kernel, reader, req.args, timings) };
    case 'passthrough': {
      const r = await passthroughLayer(reader, req.loc, req.rows, timings);
      return { id: req.id, ok: true, timings, data: r.data, sha256: hashData(r.data, timings), quantType: r.quantType, sqnrDb: r.sqnrDb, cosine: r.cosine };
    }
    case 'hash':
      return { id: req.id, ok: true, timings, sha256: hashData(req.data, timings) };
  }
}

/** Buffers this thread made go to the main thread without a copy. */
function transferables(res: PieceResponse): ArrayBuffer[] {
  if (!res.ok) return [];
  return [res.colAbsMax?.buffer, res.data?.buffer].filter((b): b is ArrayBuffer => b instanceof ArrayBuffer);
}

parentPort!.on('message', (req: PieceRequest) => {
  handle(req).then(
    (res) => parentPort!.postMessage(res, transferables(res)),
    (e) => parentPort!.postMessage({ id: req.id, ok: false, error: serializeError(e) } satisfies PieceResponse),
  );
});
parentPort!.postMessage({ ready: true, kernel: kernel.variant });
