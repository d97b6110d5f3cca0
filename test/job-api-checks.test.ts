// The coordinator service's checks at its edge, in process: which paths a job may name, the
// bearer token, and the bounds of a request.
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Metadata, status as Status } from '@grpc/grpc-js';
import { afterAll, describe, expect, test } from 'vitest';
import { PathPolicy, PathPolicyError } from '../coordinator/service/path-policy.js';
import { checkBearer, loadToken } from '../coordinator/service/bearer-auth.js';
import { MAX_PATH_CHARS, submitRequestSchema } from '../core/grpc/jobs-proto.js';
import { UsageError } from '../core/errors.js';
import { tempDir } from './helpers/models.js';

const { dir, cleanup } = tempDir('aq-jobchecks-');
const models = join(dir, 'models');
const out = join(dir, 'out');
const secret = join(dir, 'secret.safetensors');
mkdirSync(models);
mkdirSync(out);
mkdirSync(join(out, 'sub'));
writeFileSync(join(models, 'm.safetensors'), 'x');
writeFileSync(secret, 'x');
symlinkSync(secret, join(models, 'link.safetensors'));
symlinkSync(secret, join(out, 'link.arrow'));
symlinkSync(dir, join(out, 'up'));
afterAll(cleanup);

const policy = () => new PathPolicy([models], out);
const refused = (fn: () => unknown, message: RegExp) => {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(PathPolicyError);
  expect((err as Error).message).toMatch(message);
  expect((err as PathPolicyError).exitCode).toBe(2);
};

describe('job api checks', () => {
  test('job api checks - models: real paths under a model root only', () => {
    const p = policy();
    expect(p.model(join(models, 'm.safetensors'))).toBe(join(models, 'm.safetensors'));
    refused(() => p.model(secret), /model ".*secret\.safetensors" is outside the coordinator's model roots; allowed: paths under .*models/);
    refused(() => p.model(join(models, '..', 'secret.safetensors')), /is outside the coordinator's model roots/);
    refused(() => p.model(join(models, 'link.safetensors')), /link\.safetensors" is outside the coordinator's model roots/);
    refused(() => p.model('models/m.safetensors'), /model "models\/m\.safetensors" is not an absolute path on the coordinator/);
    refused(() => p.model(join(models, 'none.safetensors')), /model ".*none\.safetensors" does not exist on the coordinator/);
    refused(() => p.model(join(models, 'x'), 'calibration_path'), /^calibration_path ".*x" does not exist/);
  });

  test('job api checks - outputs: under the output root, in an existing directory, not a symbolic link', () => {
    const p = policy();
    expect(p.output('a.arrow')).toBe(join(out, 'a.arrow'));
    expect(p.output(join(out, 'sub', 'b.arrow'))).toBe(join(out, 'sub', 'b.arrow'));
    refused(() => p.output('../escape.arrow'), /output "\.\.\/escape\.arrow" is outside the coordinator's output root; allowed: files under .*out/);
    refused(() => p.output(join(dir, 'elsewhere.arrow')), /is outside the coordinator's output root/);
    refused(() => p.output('up/escape.arrow'), /output "up\/escape\.arrow" is outside the coordinator's output root/);
    refused(() => p.output('link.arrow'), /output "link\.arrow" is a symbolic link/);
    refused(() => p.output('nodir/c.arrow'), /output "nodir\/c\.arrow": directory .*nodir does not exist under the output root/);
    refused(() => p.output('.'), /outside the coordinator's output root/);
  });

  test('job api checks - bearer token: constant-time match, missing and wrong tokens refused', () => {
    const md = (v?: string) => {
      const m = new Metadata();
      if (v !== undefined) m.set('authorization', v);
      return m;
    };
    expect(checkBearer(null, md())).toBeNull();
    expect(checkBearer('s3cret', md('Bearer s3cret'))).toBeNull();
    for (const [v, details] of [
      [undefined, 'missing "authorization: Bearer <token>" metadata'],
      ['Bearer s3cre', 'the bearer token is not valid'],
      ['Bearer s3cret2', 'the bearer token is not valid'],
      ['bearer s3cret', 'the bearer token is not valid'],
      ['Basic s3cret', 'the bearer token is not valid'],
    ] as const) {
      const e = checkBearer('s3cret', md(v));
      expect(e, String(v)).toMatchObject({ code: Status.UNAUTHENTICATED, details });
    }
  });

  test('job api checks - the token comes from a file or the environment, validated', () => {
    const f = join(dir, 'token');
    writeFileSync(f, '  abc-123\n');
    expect(loadToken(f, {})).toBe('abc-123');
    expect(loadToken(undefined, { ARROW_QUANT_COORDINATOR_TOKEN: 'from-env' })).toBe('from-env');
    expect(loadToken(undefined, {})).toBeNull();
    writeFileSync(f, '\n');
    expect(() => loadToken(f, {})).toThrow(UsageError);
    expect(() => loadToken(f, {})).toThrow(/--auth-token-file .*token is empty/);
    expect(() => loadToken(join(dir, 'missing'), {})).toThrow(/--auth-token-file .*missing cannot be read: ENOENT/);
    expect(() => loadToken(undefined, { ARROW_QUANT_COORDINATOR_TOKEN: 'has space' })).toThrow(/ARROW_QUANT_COORDINATOR_TOKEN: a token is 1\.\.4096 printable ASCII characters without spaces/);
  });

  test('job api checks - Submit requests are bounded', () => {
    const ok = { model: '/m', output: 'o.arrow', config_json: '{}' };
    expect(submitRequestSchema.parse(ok)).toEqual(ok);
    const long = submitRequestSchema.safeParse({ ...ok, model: `/${'a'.repeat(MAX_PATH_CHARS)}` });
    expect(long.success).toBe(false);
    expect(long.error!.issues[0]!.message).toBe(`model is longer than ${MAX_PATH_CHARS} characters`);
    const cfg = submitRequestSchema.safeParse({ ...ok, config_json: ' '.repeat(64 * 1024 + 1) });
    expect(cfg.error!.issues[0]!.message).toBe('config_json is longer than 65536 characters');
    expect(submitRequestSchema.safeParse({ ...ok, output: '' }).error!.issues[0]!.message).toBe('output is empty');
  });
});
