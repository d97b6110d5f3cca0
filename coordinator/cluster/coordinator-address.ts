// Where workers reach this coordinator's shard transfer service: the address given, else the
// listen address, a wildcard one replaced by this host's name.

import { hostname } from 'node:os';

/** "host" or "host:0" in --advertise means this host name with the port actually bound. */
export function withPort(advertise: string, port: number): string {
  const m = /^(.*):(\d+)$/.exec(advertise);
  if (!m) return `${advertise}:${port}`;
  return m[2] === '0' ? `${m[1]}:${port}` : advertise;
}

export function isLoopback(listen: string): boolean {
  const host = listen.slice(0, listen.lastIndexOf(':')).replace(/^\[|\]$/g, '');
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

export function advertisedAddress(listen: string, port: number): string {
  const host = listen.slice(0, listen.lastIndexOf(':'));
  const h = host === '0.0.0.0' || host === '::' || host === '[::]' || host === '' ? hostname() : host;
  return `${h}:${port}`;
}
