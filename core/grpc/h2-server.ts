// A small gRPC server on node:http2, for the coordinator's shard server: grpc-js's Server hands
// each message over as one Buffer it concatenated from the DATA pieces (a 1 MiB allocation per
// chunk, and the GC pressure that follows); here a call reads its messages as the pieces they
// arrived in (h2-framing.ts), paused by flow control while the handler is busy. It speaks what
// unchanged grpc-js clients expect: length-prefixed messages, trailers grpc-status/grpc-message
// (encodeURI, as grpc-js), trailers-only answers for errors before any message, UNIMPLEMENTED for
// a method it does not serve, TLS and mutual TLS from the same PEM material as tls.ts.

import { EventEmitter } from 'node:events';
import http2, { constants as H2 } from 'node:http2';
import { status as Status, type MethodDefinition, type ServiceDefinition } from '@grpc/grpc-js';
import { GrpcListenError } from './errors.js';
import { GrpcCallError, MessageDecoder, encodeMessage, joinPieces, timeoutMs } from './h2-framing.js';
import { FLOW_CONTROL_WINDOW, MAX_FRAME_BYTES, MAX_MESSAGE_BYTES, parseListenAddress } from './proto.js';
import type { ServerTlsOptions } from './tls.js';

/** One received message: its bytes as the pieces they arrived in (views into DATA buffers). */
export interface ReceivedMessage {
  pieces: Buffer[];
  length: number;
}

/** Messages a call keeps received before it pauses the stream (HTTP/2 flow control then holds the client). */
const QUEUED_MESSAGES = 2;
/** After the answer, how long a client may go on sending before its stream is reset. */
const DRAIN_AFTER_STATUS_MS = 5_000;

/** One call on the server: read its messages, send messages, end it with a status. */
export class H2Call extends EventEmitter<{ cancelled: []; drain: [] }> {
  /** the client went away (RST_STREAM, session gone) or the deadline passed before a status was sent */
  cancelled = false;
  private statusSent = false;
  private headersSent = false;
  private trailers: http2.OutgoingHttpHeaders = {};
  private readonly decoder: MessageDecoder;
  private readonly queue: (ReceivedMessage | GrpcCallError | null)[] = [];
  private wake: (() => void) | null = null;
  private done = false;
  private deadline: NodeJS.Timeout | undefined;

  constructor(
    readonly stream: http2.ServerHttp2Stream,
    readonly path: string,
    headers: http2.IncomingHttpHeaders,
  ) {
    super();
    const encoding = headers['grpc-encoding'];
    this.decoder = new MessageDecoder(MAX_MESSAGE_BYTES, typeof encoding === 'string' ? encoding : 'identity');
    stream.on('data', (data: Buffer) => this.received(data));
    stream.on('end', () => {
      const inside = this.decoder.midMessage;
      this.push(inside ? new GrpcCallError(Status.INTERNAL, `the stream ended ${inside}`) : null);
    });
    stream.on('drain', () => this.emit('drain'));
    stream.on('error', () => undefined); // a reset stream also closes; 'close' below handles it
    stream.on('aborted', () => this.cancel());
    stream.on('close', () => {
      clearTimeout(this.deadline);
      if (!this.statusSent) this.cancel();
    });
    const ms = timeoutMs(headers['grpc-timeout']);
    if (ms !== undefined) {
      this.deadline = setTimeout(() => {
        this.sendStatus(Status.DEADLINE_EXCEEDED, 'Deadline exceeded');
        this.cancel();
      }, ms);
    }
  }

  /** The next message, or null once the client has sent its last; throws GrpcCallError on bad framing. */
  async next(): Promise<ReceivedMessage | null> {
    for (;;) {
      if (this.queue.length > 0) {
        const m = this.queue.shift()!;
        if (this.queue.length < QUEUED_MESSAGES && !this.done) this.stream.resume();
        if (m instanceof GrpcCallError) throw m;
        return m;
      }
      if (this.done) return null;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  /** The handler reads no more: what still arrives is dropped. */
  stopReading(): void {
    this.finishReading();
    this.queue.length = 0;
  }

  /** Sends one message (headers first if not yet sent); false when the stream wants a 'drain'. */
  sendMessage(body: Uint8Array): boolean {
    if (this.statusSent || this.stream.destroyed) return false;
    this.sendHeaders();
    return this.stream.write(encodeMessage(body));
  }

  /** Ends the call with `code`: in trailers after messages, else as a trailers-only answer. */
  sendStatus(code: Status, details: string): void {
    if (this.statusSent) return;
    this.statusSent = true;
    clearTimeout(this.deadline);
    const status = { 'grpc-status': String(code), 'grpc-message': statusMessage(details) };
    if (!this.stream.destroyed) {
      try {
        if (this.headersSent) {
          this.trailers = status;
          this.stream.end();
        } else {
          this.stream.respond({ ':status': 200, 'content-type': 'application/grpc+proto', ...status }, { endStream: true });
        }
      } catch {
        // gone meanwhile, or node:http2 refused the headers: a reset at least ends the client's wait
        this.reset();
      }
    }
    // A client still sending after the answer has its stream reset before long.
    this.stopReading();
    if (!this.stream.closed) {
      const timer = setTimeout(() => this.stream.close(H2.NGHTTP2_CANCEL), DRAIN_AFTER_STATUS_MS);
      timer.unref();
      this.stream.once('close', () => clearTimeout(timer));
    }
  }

  private sendHeaders(): void {
    if (this.headersSent) return;
    this.headersSent = true;
    this.stream.once('wantTrailers', () => {
      try {
        this.stream.sendTrailers(this.trailers);
      } catch {
        this.reset();
      }
    });
    this.stream.respond({ ':status': 200, 'content-type': 'application/grpc+proto', 'grpc-accept-encoding': 'identity', 'grpc-encoding': 'identity' }, { waitForTrailers: true });
  }

  private reset(): void {
    if (!this.stream.destroyed) this.stream.close(H2.NGHTTP2_INTERNAL_ERROR);
  }

  private received(data: Buffer): void {
    if (this.done) return;
    try {
      this.decoder.write(data, (m) => this.queue.push(m));
    } catch (e) {
      this.push(e as GrpcCallError);
      this.finishReading();
      return;
    }
    if (this.queue.length >= QUEUED_MESSAGES) this.stream.pause();
    this.wakeReader();
  }

  private push(item: ReceivedMessage | GrpcCallError | null): void {
    if (this.done) return;
    if (item !== null) this.queue.push(item);
    this.done = true;
    this.wakeReader();
  }

  private finishReading(): void {
    this.done = true;
    this.stream.resume(); // drop the rest, so that the client's half of the stream can end
    this.wakeReader();
  }

  private wakeReader(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.statusSent = true;
    clearTimeout(this.deadline);
    this.finishReading();
    this.emit('cancelled');
  }
}

/**
 * Longest grpc-message sent, in characters and encoded: details may quote what a client sent, and
 * a header block node:http2 cannot send leaves the client waiting (a 100 000-character one did).
 */
const MAX_STATUS_CHARS = 2048;
const MAX_STATUS_ENCODED = 8192;

/** grpc-message as grpc-js writes it (encodeURI), bounded, with lone surrogates (which encodeURI refuses) replaced. */
function statusMessage(details: string): string {
  const encode = (chars: number) => {
    const bounded = details.length > chars ? `${details.slice(0, chars)}…` : details;
    return encodeURI(bounded.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD'));
  };
  const encoded = encode(MAX_STATUS_CHARS);
  // a UTF-16 unit encodes to at most 9 characters (a 3-byte character: %XX%XX%XX), so this one fits
  return encoded.length <= MAX_STATUS_ENCODED ? encoded : encode(Math.floor(MAX_STATUS_ENCODED / 9) - 1);
}

// ---- unary and server-streaming calls, shaped as grpc-js hands them to handlers

/** What a grpc-js handler of a unary or server-streaming method uses of its call (health.ts, DownloadTensor). */
export class H2ServerStream<Req, Res> extends EventEmitter {
  constructor(
    private readonly call: H2Call,
    readonly request: Req,
    private readonly serialize: (value: Res) => Buffer,
  ) {
    super();
    call.on('cancelled', () => {
      this.emit('cancelled');
      this.emit('close');
    });
    call.on('drain', () => this.emit('drain'));
    // grpc-js turns an 'error' event on a server stream into the call's status
    this.on('error', (e: { code?: number; details?: string; message?: string }) => call.sendStatus(e.code ?? Status.INTERNAL, e.details ?? e.message ?? 'internal error'));
  }

  get cancelled(): boolean {
    return this.call.cancelled;
  }

  write(message: Res): boolean {
    return this.call.sendMessage(this.serialize(message));
  }

  end(): void {
    this.call.sendStatus(Status.OK, 'OK');
    this.emit('close');
  }
}

type UnaryCallback<Res> = (error: { code?: number; details?: string } | null, value?: Res) => void;
type AnyHandler = (call: H2ServerStream<unknown, unknown>, callback?: UnaryCallback<unknown>) => void;

// ---- the server

export interface H2ServerOptions {
  /** TLS (mutual when requireClientCert); plaintext when absent */
  tls?: ServerTlsOptions | null;
}

export class H2GrpcServer {
  private readonly routes = new Map<string, (call: H2Call) => void>();
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  private server: http2.Http2Server | http2.Http2SecureServer | null = null;

  constructor(private readonly options: H2ServerOptions = {}) {}

  /** Serves `path` ("/package.Service/Method") with a handler that reads and answers the call itself. */
  route(path: string, handler: (call: H2Call) => void): void {
    this.routes.set(path, handler);
  }

  /** Serves the unary and server-streaming methods of a service with grpc-js-style handlers. */
  addService(definition: ServiceDefinition, implementation: Record<string, unknown>): void {
    for (const [name, method] of Object.entries(definition) as [string, MethodDefinition<unknown, unknown>][]) {
      const handler = (implementation[name] ?? implementation[method.originalName ?? '']) as AnyHandler | undefined;
      if (!handler) continue;
      if (method.requestStream) throw new Error(`${method.path}: client-streaming methods are served with route()`);
      this.route(method.path, (call) => void this.serveOne(call, method, handler));
    }
  }

  /** Listens on "host:port" (port 0: the OS picks one). */
  async start(listen: string): Promise<{ port: number; address: string }> {
    const { host, port } = parseListenAddress(listen);
    const settings = { initialWindowSize: FLOW_CONTROL_WINDOW, maxFrameSize: MAX_FRAME_BYTES };
    // as grpc-js: node's session memory check misbehaves under load, flow control bounds memory instead
    const common = { settings, maxSessionMemory: Number.MAX_SAFE_INTEGER, maxSendHeaderBlockLength: Number.MAX_SAFE_INTEGER };
    const tls = this.options.tls;
    const server = tls
      ? http2.createSecureServer({
          ...common, key: tls.key, cert: tls.cert, ALPNProtocols: ['h2'],
          ...(tls.clientCa ? { ca: tls.clientCa } : {}),
          requestCert: tls.requireClientCert ?? false, rejectUnauthorized: tls.requireClientCert ?? false,
        })
      : http2.createServer(common);
    server.on('session', (session) => this.session(session));
    server.on('stream', (stream, headers) => this.stream(stream, headers));
    const bare = host.startsWith('[') ? host.slice(1, -1) : host;
    await new Promise<void>((resolve, reject) => {
      const failed = (err: Error) => reject(new GrpcListenError(`cannot listen on ${listen}: ${err.message}`, listen, { cause: err }));
      server.once('error', failed);
      server.listen(port, bare, () => {
        server.off('error', failed);
        resolve();
      });
    });
    this.server = server;
    const bound = (server.address() as { port: number }).port;
    return { port: bound, address: `${host}:${bound}` };
  }

  /** Refuses new connections and streams; running calls get `graceMs`, then every session is destroyed. */
  async stop(graceMs: number): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = null;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of this.sessions) s.close();
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)));
    await Promise.race([closed, late]);
    clearTimeout(timer);
    for (const s of this.sessions) s.destroy();
    await closed;
  }

  private session(session: http2.ServerHttp2Session): void {
    this.sessions.add(session);
    session.on('close', () => this.sessions.delete(session));
    session.on('error', () => undefined); // its streams see the failure as 'close'
    try {
      session.setLocalWindowSize(FLOW_CONTROL_WINDOW);
    } catch {
      /* the default window still works, only slower */
    }
    if (!this.server) session.close(); // a connection accepted while stopping
  }

  private stream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    stream.on('error', () => undefined);
    const contentType = headers['content-type'];
    if (headers[':method'] !== 'POST' || typeof contentType !== 'string' || !contentType.startsWith('application/grpc')) {
      stream.respond({ ':status': H2.HTTP_STATUS_UNSUPPORTED_MEDIA_TYPE }, { endStream: true });
      return;
    }
    const path = String(headers[':path'] ?? '');
    const call = new H2Call(stream, path, headers);
    const route = this.routes.get(path);
    if (!route) {
      call.sendStatus(Status.UNIMPLEMENTED, `The server does not implement the method ${path.slice(0, 200)}`);
      return;
    }
    route(call);
  }

  /** A unary or server-streaming call: exactly one request message, then the grpc-js-style handler. */
  private async serveOne(call: H2Call, method: MethodDefinition<unknown, unknown>, handler: AnyHandler): Promise<void> {
    let request: unknown;
    try {
      const first = await call.next();
      if (first === null) throw new GrpcCallError(Status.UNIMPLEMENTED, `Received no request message for method ${method.path}`);
      if ((await call.next()) !== null) throw new GrpcCallError(Status.UNIMPLEMENTED, `Received a second request message for method ${method.path}`);
      try {
        request = method.requestDeserialize(joinPieces(first.pieces, first.length));
      } catch {
        throw new GrpcCallError(Status.INTERNAL, 'Error deserializing request');
      }
    } catch (e) {
      if (e instanceof GrpcCallError) call.sendStatus(e.code, e.details);
      return;
    }
    if (call.cancelled) return;
    const stream = new H2ServerStream(call, request, method.responseSerialize);
    if (method.responseStream) {
      handler(stream);
      return;
    }
    handler(stream, (error, value) => {
      if (error) call.sendStatus(error.code ?? Status.UNKNOWN, error.details ?? '');
      else {
        call.sendMessage(method.responseSerialize(value));
        call.sendStatus(Status.OK, 'OK');
      }
    });
  }
}
