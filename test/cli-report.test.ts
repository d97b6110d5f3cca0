import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'node-html-parser';
import { afterAll, describe, expect, test } from 'vitest';
import { OutputFileReader } from '../core/format/output-reader.js';
import { FIXTURE_MODELS, runCli } from './helpers/cli.js';
import { tempDir } from './helpers/models.js';

const { dir, cleanup } = tempDir('aq-report-');
afterAll(cleanup);
const BF16 = join(FIXTURE_MODELS, 'stories260K-bf16.safetensors');
const env = { XDG_CACHE_HOME: join(dir, 'xdg') };

describe('cli report', () => {
  test('cli report - a measured allocation: the quantize summary compares, the page holds the file\'s numbers in its SVGs', async () => {
    const out = join(dir, 'm.arrow');
    const q = await runCli(['quantize', BF16, '-o', out, '--mixed-precision', '--strategy', 'measured', '--target-size-mb', '0.22', '--json'], { env });
    expect(q.code).toBe(0);
    expect(q.stderr).toMatch(/vs the heuristic at its 217760 bytes: the optimum there has −96\.4% error, \+17\.96 dB/);
    expect(q.stderr).toMatch(/vs uniform INT4 g128 \(163820 bytes, error 2893, 20\.13 dB\): this file has \+34\.3% bytes, −50\.7% error, \+7\.98 dB; the optimum at uniform INT4's bytes has \+928\.8% error, −1\.20 dB/);
    expect(JSON.parse(q.stdout).allocation.chosen.bytes_out).toBe(219968);

    const html = join(dir, 'r.html');
    const r = await runCli(['report', out, '-o', html, '--json']);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/wrote .*r\.html/);
    const text = readFileSync(html, 'utf8');
    // self-contained: nothing to fetch
    expect(text).not.toMatch(/<script|<link|src=|url\(|@import|https?:\/\/(?!www\.w3\.org\/2000\/svg)/);
    const doc = parse(text);

    const file = await OutputFileReader.open(out);
    const records = [];
    for await (const rec of file.layers()) records.push(rec);
    const summary = file.json<{ bytes_out: number; weighted_sqnr_db: number }>('arrowquant.summary');
    const allocation = file.json<{ curve: { bytes_out: number; total_error: number }[]; heuristic: { bytes_out: number; total_error: number }; uniform_int4: { bytes_out: number } }>('arrowquant.allocation');
    await file.close();

    const bits = doc.querySelectorAll('#chart-bits rect.bar');
    expect(bits.map((b) => [b.getAttribute('data-label'), Number(b.getAttribute('data-value'))])).toEqual(records.map((x) => [x.layer_name, x.bit_width]));
    const sqnr = doc.querySelectorAll('#chart-sqnr rect.bar');
    expect(sqnr.map((b) => Number(b.getAttribute('data-value')))).toEqual(records.map((x) => (Number.isFinite(x.sqnr_db) ? x.sqnr_db : 0)));
    const curve = doc.querySelectorAll('#chart-curve circle[data-kind="curve"]');
    expect(curve.map((c) => [Number(c.getAttribute('data-bytes')), Number(c.getAttribute('data-error'))])).toEqual(allocation.curve.map((p) => [p.bytes_out, p.total_error]));
    const heuristic = doc.querySelector('#chart-curve circle[data-kind="heuristic"]')!;
    expect([Number(heuristic.getAttribute('data-bytes')), Number(heuristic.getAttribute('data-error'))]).toEqual([allocation.heuristic.bytes_out, allocation.heuristic.total_error]);
    expect(Number(doc.querySelector('#chart-curve circle[data-kind="uniform"]')!.getAttribute('data-bytes'))).toBe(allocation.uniform_int4.bytes_out);
    expect(Number(doc.querySelector('#chart-curve circle[data-kind="chosen"]')!.getAttribute('data-bytes'))).toBe(summary.bytes_out);
    expect(Number(doc.querySelector('#summary b')!.getAttribute('data-value'))).toBe(summary.bytes_out);
    expect(doc.querySelectorAll('#layers tbody tr').length).toBe(records.length);
    const data = JSON.parse(r.stdout);
    expect(data.layers.length).toBe(48);
    expect(data.summary.weighted_sqnr_db).toBe(summary.weighted_sqnr_db);
  });

  test('cli report - a heuristic file has no curve; a non-Arrow file or a missing argument exits 2 naming it', async () => {
    const out = join(dir, 'u.arrow');
    expect((await runCli(['quantize', BF16, '-o', out], { env })).code).toBe(0);
    const r = await runCli(['report', out]);
    expect(r.code).toBe(0);
    const doc = parse(readFileSync(join(dir, 'u.report.html'), 'utf8'));
    expect(doc.querySelector('#chart-curve')).toBeNull();
    expect(doc.querySelectorAll('#chart-bits rect.bar').length).toBe(48);
    expect(doc.querySelector('body')!.text).toMatch(/holds no size–error curve/);

    const junk = join(dir, 'junk.arrow');
    writeFileSync(junk, 'not arrow at all');
    const j = await runCli(['report', junk]);
    expect(j.code).toBe(2);
    expect(j.stderr).toMatch(/junk\.arrow is not an Arrow IPC file \(no ARROW1 magic\)/);
    const missing = await runCli(['report']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/missing required argument 'file'/);
  });
});
