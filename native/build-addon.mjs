// Builds the native kernels at `npm install`. A failed build is not a failed install:
// ArrowQuant then runs the TypeScript reference kernels and says so once, with the reason
// recorded here in native/build/BUILD_FAILED.txt.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const failedMarker = join(here, 'build', 'BUILD_FAILED.txt');

function nodeGypScript() {
  try {
    return createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js');
  } catch {
    return process.env.npm_config_node_gyp || null;
  }
}

// Run outside npm (`node native/build-addon.mjs`), node-gyp does not see npm's nodedir and would
// download headers; use the running Node's own headers when they are installed beside it.
function nodedirArgs() {
  if (process.env.npm_config_nodedir) return [];
  const prefix = dirname(dirname(process.execPath));
  return existsSync(join(prefix, 'include', 'node', 'node_api.h')) ? [`--nodedir=${prefix}`] : [];
}

const script = nodeGypScript();
let reason = null;
if (process.env.ARROWQUANT_SKIP_NATIVE_BUILD === '1') {
  reason = 'ARROWQUANT_SKIP_NATIVE_BUILD=1';
} else if (!script) {
  reason = 'node-gyp is not installed';
} else {
  const r = spawnSync(process.execPath, [script, 'rebuild', '--directory', here, ...nodedirArgs()], { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) reason = `node-gyp rebuild failed (exit ${r.status}):\n${(r.stderr || '').split('\n').slice(-30).join('\n')}`;
}
if (reason) {
  mkdirSync(dirname(failedMarker), { recursive: true });
  writeFileSync(failedMarker, reason + '\n');
  console.warn(`arrowquant: native kernels not built (${reason.split('\n')[0]}); the TypeScript reference kernels will be used instead.`);
} else {
  rmSync(failedMarker, { force: true });
}
