import { describe, expect, test } from 'vitest';
import { TaskRefusedError } from '../core/cluster/errors.js';
import { checkCoordinator } from '../worker/cluster/task-guard.js';

const check = (address: string, allow?: string[], tls = false) => () => checkCoordinator(address, { tls: tls ? {} : null, allow }, 'layer 0 of job j', 'w1', 'l0');

describe('coordinator trust', () => {
  test('coordinator trust - without TLS only loopback unless the operator allows more', () => {
    expect(check('127.0.0.1:7070')).not.toThrow();
    expect(check('127.8.0.1:7070')).not.toThrow();
    expect(check('[::1]:7070')).not.toThrow();
    expect(check('10.1.2.3:7070')).toThrow(TaskRefusedError);
    expect(check('10.1.2.3:7070')).toThrow(/coordinator 10\.1\.2\.3:7070 is not an allowed coordinator host \(localhost, 127\.0\.0\.1, ::1; see --allow-coordinator\)/);
  });

  test('coordinator trust - subnets, domains, exact names and "*" from --allow-coordinator', () => {
    const allow = ['10.0.0.0/8', 'fd00::/8', '*.svc.cluster.local', 'coord-1'];
    expect(check('10.244.3.7:7070', allow)).not.toThrow();
    expect(check('[fd12::5]:7070', allow)).not.toThrow();
    expect(check('aq.ns.svc.cluster.local:7070', allow)).not.toThrow();
    expect(check('coord-1:7070', allow)).not.toThrow();
    expect(check('11.0.0.1:7070', allow)).toThrow(/11\.0\.0\.1:7070 is not an allowed coordinator host/);
    expect(check('coord-2:7070', allow)).toThrow(/coord-2:7070 is not an allowed/);
    // a name is never matched by a subnet, a bad subnet is only an exact name
    expect(check('10.0.0.0:7070', ['10.0.0.0/33'])).toThrow(/not an allowed/);
    expect(check('anything.example:1', ['*'])).not.toThrow();
  });

  test('coordinator trust - with TLS and no list, the CA decides (any host)', () => {
    expect(check('203.0.113.5:7070', undefined, true)).not.toThrow();
    expect(check('203.0.113.5:7070', ['10.0.0.0/8'], true)).toThrow(/not an allowed/);
  });
});
