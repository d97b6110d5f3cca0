// Preloaded (node --require) into a worker by the FIFO test: right after the process first
// stats or opens a file whose path matches AQ_TEST_SWAP_MATCH, the FIFO AQ_TEST_SWAP_FIFO is
// renamed over it — an attacker winning the race between a check of the path and its use.
const fs = require('node:fs');
const { syncBuiltinESMExports } = require('node:module');
const match = new RegExp(process.env.AQ_TEST_SWAP_MATCH || '$^');
const fifo = process.env.AQ_TEST_SWAP_FIFO;
let swapped = false;
for (const name of ['statSync', 'openSync']) {
  const original = fs[name];
  fs[name] = function (path, ...rest) {
    const result = original.call(this, path, ...rest);
    if (!swapped && fifo && match.test(String(path))) {
      swapped = true;
      fs.renameSync(fifo, String(path));
    }
    return result;
  };
}
syncBuiltinESMExports();
