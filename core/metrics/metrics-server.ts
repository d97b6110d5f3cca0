// Serves a prom-client registry for Prometheus at http://HOST:PORT/metrics (HOST:PORT as the
// operator gave it: port 0 picks a free one). Anything but GET /metrics is 404.

import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';
import { UsageError } from '../errors.js';

export interface MetricsServer {
  /** where it listens, as http://host:port/metrics */
  url: string;
  close(): Promise<void>;
}

/** "HOST:PORT" or "[IPv6]:PORT" → host and port, else a UsageError naming the option. */
export function parseListenAddress(listen: string, option: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^\s:[\]]+)):(\d{1,5})$/.exec(listen);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new UsageError(`${option}: expected HOST:PORT (port 0-65535), got ${JSON.stringify(listen)}`);
  return { host: m[1] ?? m[2]!, port };
}

export async function startMetricsServer(listen: string, registry: Registry, option = '--metrics-listen'): Promise<MetricsServer> {
  const { host, port } = parseListenAddress(listen, option);
  const server: Server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: GET /metrics\n');
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      (e: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${e.message}\n`),
    );
  });
  // a scraper that never finishes its request must not hold the server open
  server.requestTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(new UsageError(`${option} ${listen}: cannot listen (${e.code ?? e.message})`)));
    server.listen(port, host, () => resolve());
  });
  const bound = server.address() as { address: string; port: number };
  const shown = bound.address.includes(':') ? `[${bound.address}]` : bound.address;
  return {
    url: `http://${shown}:${bound.port}/metrics`,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
