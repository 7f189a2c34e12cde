import { performance } from 'node:perf_hooks';
import { type CallContext, type MethodDescriptor, ServerError, type ServerMiddlewareCall, Status } from 'nice-grpc';
import { Counter, Histogram, type Registry } from 'prom-client';

/**
 * Per-method gRPC server metrics, named and labelled as go-grpc-prometheus's (what etcd
 * exports), with a `kvstore_` prefix and the status code on the latency histogram as well:
 *
 * - `kvstore_grpc_server_started_total{grpc_service,grpc_method,grpc_type}`: calls started.
 * - `kvstore_grpc_server_handled_total{...,grpc_code}`: calls ended, by status code.
 * - `kvstore_grpc_server_handling_seconds{...,grpc_code}`: from the call reaching the handler
 *   chain to its end (the last answer handed to gRPC, or the error); for a streaming method, the
 *   life of the stream.
 * - `kvstore_grpc_server_msg_received_total` / `_msg_sent_total{grpc_service,grpc_method,grpc_type}`:
 *   messages of streaming calls (a unary call's one request and answer are not counted here).
 *
 * `grpc_code` is the name of the status the call ended with (`OK`, `INVALID_ARGUMENT`, ...: the
 * code errorMiddleware mapped, so attach this middleware outside it), or `CANCELLED` when the
 * call was cancelled first (the client went away, its deadline passed, or the node cut it off).
 */

/** Histogram buckets of kvstore_grpc_server_handling_seconds: 100 µs to 5 min (admin calls and streams last long). */
const handlingSecondsBuckets = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

type GrpcType = 'unary' | 'client_stream' | 'server_stream' | 'bidi_stream';

/** One method's labels and message counts (plain numbers: a stream message costs an increment; read at scrape). */
interface MethodStats {
  readonly labels: { readonly grpc_service: string; readonly grpc_method: string; readonly grpc_type: GrpcType };
  received: number;
  sent: number;
}

export class GrpcServerMetrics {
  private readonly methods = new Map<string, MethodStats>();
  private readonly started: Counter<'grpc_service' | 'grpc_method' | 'grpc_type'>;
  private readonly handled: Counter<'grpc_service' | 'grpc_method' | 'grpc_type' | 'grpc_code'>;
  private readonly handling: Histogram<'grpc_service' | 'grpc_method' | 'grpc_type' | 'grpc_code'>;

  constructor(registry: Registry) {
    const registers = [registry];
    const labelNames = ['grpc_service', 'grpc_method', 'grpc_type'] as const;
    const methods = this.methods;
    this.started = new Counter({ name: 'kvstore_grpc_server_started_total', help: 'gRPC calls started on the server, by method.', labelNames, registers });
    this.handled = new Counter({ name: 'kvstore_grpc_server_handled_total', help: 'gRPC calls ended on the server, by method and status code.', labelNames: [...labelNames, 'grpc_code'], registers });
    this.handling = new Histogram({
      name: 'kvstore_grpc_server_handling_seconds',
      help: 'Seconds from a gRPC call reaching the server to its end (for a streaming method, the life of the stream), by method and status code.',
      labelNames: [...labelNames, 'grpc_code'],
      buckets: handlingSecondsBuckets,
      registers,
    });
    new Counter({
      name: 'kvstore_grpc_server_msg_received_total',
      help: 'Messages received on streaming gRPC calls, by method.',
      labelNames,
      registers,
      collect() {
        this.reset();
        for (const m of methods.values()) if (m.labels.grpc_type === 'client_stream' || m.labels.grpc_type === 'bidi_stream') this.inc(m.labels, m.received);
      },
    });
    new Counter({
      name: 'kvstore_grpc_server_msg_sent_total',
      help: 'Messages sent on streaming gRPC calls, by method.',
      labelNames,
      registers,
      collect() {
        this.reset();
        for (const m of methods.values()) if (m.labels.grpc_type === 'server_stream' || m.labels.grpc_type === 'bidi_stream') this.inc(m.labels, m.sent);
      },
    });
  }

  /** The nice-grpc server middleware feeding these metrics; `.use()` it before errorMiddleware. */
  middleware() {
    return <Request, Response>(call: ServerMiddlewareCall<Request, Response>, context: CallContext): AsyncGenerator<Response, Response | void, undefined> => {
      const stats = this.statsOf(call.method);
      const startedMs = performance.now();
      this.started.inc(stats.labels);
      const request = call.requestStream ? countReceived(call.request, stats) : call.request;
      const inner: AsyncGenerator<Response, Response | void, undefined> = call.next(request, context);
      return new ObservedCall(inner, call.responseStream ? stats : undefined, (error) => {
        this.ended(stats, context.signal.aborted ? Status.CANCELLED : error === undefined ? Status.OK : codeOf(error), (performance.now() - startedMs) / 1000);
      });
    };
  }

  /**
   * A unary call answered outside nice-grpc (direct-unary.ts): counted as started now; the
   * function returned ends it with its status code and duration, as the middleware would.
   */
  startUnary(path: string): (code: Status, seconds: number) => void {
    const stats = this.statsOf({ path, requestStream: false, responseStream: false, options: {} });
    this.started.inc(stats.labels);
    return (code, seconds) => this.ended(stats, code, seconds);
  }

  /** A call of `stats`' method ended with `code` after `seconds`. */
  private ended(stats: MethodStats, code: Status, seconds: number): void {
    const labels = { ...stats.labels, grpc_code: statusName(code) };
    this.handled.inc(labels);
    this.handling.observe(labels, seconds);
  }

  private statsOf(method: MethodDescriptor): MethodStats {
    let stats = this.methods.get(method.path);
    if (stats === undefined) {
      // path is "/package.Service/Method".
      const at = method.path.lastIndexOf('/');
      const type: GrpcType = method.requestStream ? (method.responseStream ? 'bidi_stream' : 'client_stream') : method.responseStream ? 'server_stream' : 'unary';
      stats = { labels: { grpc_service: method.path.slice(1, at), grpc_method: method.path.slice(at + 1), grpc_type: type }, received: 0, sent: 0 };
      this.methods.set(method.path, stats);
    }
    return stats;
  }
}

/** The status code an error ends a call with, as nice-grpc sends it (createErrorStatusObject). */
function codeOf(error: unknown): Status {
  if (error instanceof ServerError) return error.code;
  if (error instanceof Error && error.name === 'AbortError') return Status.CANCELLED;
  return Status.UNKNOWN;
}

/** The name of a gRPC status code (`OK`, `INVALID_ARGUMENT`, ...), the `grpc_code` and `code` labels. */
export function statusName(code: Status): string {
  return Status[code] ?? String(code);
}

/** `source`, counting its messages into `stats.received` (an iterator forwarding each call, not a generator per message). */
function countReceived<T>(source: AsyncIterable<T>, stats: MethodStats): AsyncIterable<T> {
  return {
    [Symbol.asyncIterator](): AsyncIterator<T> {
      const iterator = source[Symbol.asyncIterator]();
      return {
        next: () =>
          iterator.next().then((result) => {
            if (result.done !== true) stats.received++;
            return result;
          }),
        return: (value?: unknown) => iterator.return?.(value) ?? Promise.resolve({ done: true, value: undefined }),
        throw: (error?: unknown) => iterator.throw?.(error) ?? Promise.reject(error),
      };
    },
  };
}

/**
 * The handler chain's generator, forwarding every call and reporting its end once: when it is
 * done, throws, or is returned (nice-grpc returns it when the client went away). Messages it
 * yields are counted into `sent` (streaming answers). A plain forwarding object: an async
 * generator around it would add a generator step per stream message.
 */
class ObservedCall<T, R> implements AsyncGenerator<T, R, undefined> {
  private ended = false;

  constructor(
    private readonly inner: AsyncGenerator<T, R, undefined>,
    private readonly sent: MethodStats | undefined,
    private readonly onEnd: (error: unknown) => void,
  ) {}

  next(): Promise<IteratorResult<T, R>> {
    return this.settle(this.inner.next());
  }

  return(value: R | PromiseLike<R>): Promise<IteratorResult<T, R>> {
    return this.settle(this.inner.return(value));
  }

  throw(error: unknown): Promise<IteratorResult<T, R>> {
    return this.settle(this.inner.throw(error));
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  private settle(step: Promise<IteratorResult<T, R>>): Promise<IteratorResult<T, R>> {
    return step.then(
      (result) => {
        if (result.done === true) this.end(undefined);
        else if (this.sent !== undefined) this.sent.sent++;
        return result;
      },
      (error: unknown) => {
        this.end(error);
        throw error;
      },
    );
  }

  private end(error: unknown): void {
    if (this.ended) return;
    this.ended = true;
    this.onEnd(error);
  }
}
