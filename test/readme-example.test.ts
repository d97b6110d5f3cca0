// The README's library example, as written, in a fresh project that installs ArrowQuant the way
// the README says (npm install <path of this clone>), run on the committed test model.
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { FIXTURE_MODELS, ROOT } from './helpers/cli.js';
import { tempDir } from './helpers/models.js';

const { dir, cleanup } = tempDir('aq-readme-');
afterAll(cleanup);
const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');

/** The fenced code blocks of `lang` in the README's section `heading`. */
function blocks(heading: string, lang: string): string[] {
  const start = readme.indexOf(`\n## ${heading}\n`);
  expect(start, `README has a "## ${heading}" section`).toBeGreaterThanOrEqual(0);
  const end = readme.indexOf('\n## ', start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  return [...section.matchAll(new RegExp('```' + lang + '\\n([\\s\\S]*?)```', 'g'))].map((m) => m[1]!);
}

describe('readme', () => {
  test('readme - the library example runs as written against an install from this clone', () => {
    const [install] = blocks('Library', 'sh');
    const [example] = blocks('Library', 'js');
    expect(install).toMatch(/^npm install \/path\/to\/arrowquant\b/m);
    expect(example).toMatch(/from 'arrowquant'/);
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    // the README's install, with this clone as the path (offline: the link needs nothing from a registry)
    execFileSync('npm', ['install', ROOT, '--offline', '--no-audit', '--no-fund', '--ignore-scripts'], { cwd: dir, stdio: 'pipe' });
    expect(realpathSync(join(dir, 'node_modules', 'arrowquant'))).toBe(realpathSync(ROOT));
    copyFileSync(join(FIXTURE_MODELS, 'stories260K-bf16.safetensors'), join(dir, 'model.safetensors'));
    writeFileSync(join(dir, 'example.mjs'), example!);
    const r = spawnSync(process.execPath, ['example.mjs'], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    const planned = /^plan: 585600 → (\d+) bytes \[\]$/.exec(lines[0]!);
    expect(planned, lines[0]).not.toBeNull();
    expect(lines.slice(1, -1)).toEqual(Array.from({ length: 48 }, (_, i) => `${i + 1}/48`));
    const wrote = /^wrote (.+): (\d+) bytes, SQNR ([\d.]+) dB, kernel (\w+)$/.exec(lines.at(-1)!);
    expect(wrote, lines.at(-1)).not.toBeNull();
    expect(wrote![1]).toBe(join(realpathSync(dir), 'model.arrow'));
    expect(wrote![2]).toBe(planned![1]);
    expect(readFileSync(join(dir, 'model.arrow')).subarray(0, 6).toString()).toBe('ARROW1');
    expect(existsSync(join(dir, 'model.safetensors'))).toBe(true);
  }, 90_000);
});
