// Preloaded (node --require) into a CLI process by the full-disk tests: writes to a file whose
// name matches AQ_TEST_ENOSPC_MATCH fail with ENOSPC once AQ_TEST_ENOSPC_AFTER bytes have been
// written to it — a disk that fills up in the middle of the output, on any file system. With
// AQ_TEST_DATASYNC_EIO=1 it is the file's datasync that fails (EIO) instead: data lost on the way
// to the disk after the writes succeeded.
const fsp = require('node:fs/promises');
const { syncBuiltinESMExports } = require('node:module');
const match = new RegExp(process.env.AQ_TEST_ENOSPC_MATCH || '$^');
const after = Number(process.env.AQ_TEST_ENOSPC_AFTER || 0);
const datasyncFails = process.env.AQ_TEST_DATASYNC_EIO === '1';
const open = fsp.open;
fsp.open = async function (path, ...rest) {
  const fh = await open.call(this, path, ...rest);
  if (!match.test(String(path))) return fh;
  if (datasyncFails) {
    fh.datasync = async () => {
      const e = new Error('EIO: i/o error, fdatasync');
      Object.assign(e, { code: 'EIO', errno: -5, syscall: 'fdatasync' });
      throw e;
    };
    return fh;
  }
  let written = 0;
  const write = fh.write.bind(fh);
  const reserve = (length) => {
    if (written + length > after) {
      const e = new Error(`ENOSPC: no space left on device, write`);
      Object.assign(e, { code: 'ENOSPC', errno: -28, syscall: 'write' });
      throw e;
    }
    written += length;
  };
  fh.write = async (buf, offset = 0, length = buf.byteLength - offset, position) => {
    reserve(length);
    return write(buf, offset, length, position);
  };
  // writeFile does not go through fh.write: the stage and download files are written with it.
  const writeFile = fh.writeFile.bind(fh);
  fh.writeFile = async (data, ...more) => {
    reserve(typeof data === 'string' ? Buffer.byteLength(data) : data.byteLength);
    return writeFile(data, ...more);
  };
  // the coordinator writes a received chunk's pieces with one writev
  const writev = fh.writev.bind(fh);
  fh.writev = async (buffers, position) => {
    reserve(buffers.reduce((s, b) => s + b.byteLength, 0));
    return writev(buffers, position);
  };
  return fh;
};
syncBuiltinESMExports();
