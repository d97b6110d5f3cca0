// The test helper finds nats-server where Debian installs it even when /usr/sbin is not on the PATH.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { natsServerBinary } from './helpers/nats-server.js';
import { tempDir } from './helpers/models.js';

const { dir, cleanup } = tempDir('aq-nats-bin-');
afterAll(cleanup);

describe('nats helper', () => {
  test('nats helper - nats-server is found on the PATH first, then in /usr/sbin; NATS_SERVER_BIN overrides', () => {
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    writeFileSync(join(bin, 'nats-server'), '#!/bin/sh\n', { mode: 0o755 });
    expect(natsServerBinary({ PATH: `/nonexistent:${bin}` })).toBe(join(bin, 'nats-server'));
    expect(natsServerBinary({ PATH: bin, NATS_SERVER_BIN: '/opt/nats/nats-server' })).toBe('/opt/nats/nats-server');
    if (existsSync('/usr/sbin/nats-server')) expect(natsServerBinary({ PATH: '/nonexistent' })).toBe('/usr/sbin/nats-server');
    else if (!['/usr/local/sbin', '/usr/local/bin', '/usr/bin'].some((d) => existsSync(join(d, 'nats-server')))) {
      expect(() => natsServerBinary({ PATH: '/nonexistent' })).toThrow(/nats-server not found .*apt-get install nats-server/);
    }
  });
});
