import * as grpc from '@grpc/grpc-js';
import { Status } from 'nice-grpc';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { deadlineMetadataKey } from '../common/deadline-header.js';
import type { CancelSignal } from '../replication/deadline.js';
import type { AuthSession } from './auth/authenticator.js';
import { statusOfFailedCall } from './error-middleware.js';
import type { GrpcServerMetrics } from './grpc-metrics-middleware.js';
import type { UnaryCallInfo } from './kv-service.js';
import { rejectIfMalformed } from './malformed-requests.js';

/**
 * The public Put, Get and Delete answered on grpc-js directly: a grpc-js server interceptor
 * (ServerOptions.interceptors, grpc-js's public API) that takes these calls before they reach
 * nice-grpc's handler and answers them itself; every other method passes through untouched.
 *
 * Why: a client that sends one unary call per operation (any language's generated stub, buf
 * curl, grpcurl) paid for nice-grpc's call adapter on top of grpc-js: an AbortController, two
 * metadata conversions, a promise chain and one async generator per middleware (metrics,
 * errors, auth, malformed requests) per call. The unary profile (BENCHMARKS.md, issue 17) put
 * that at ~50 µs of a put's server CPU. Here the same steps run as plain calls, in the same
 * order: authenticate, reject a malformed request, run the operation (kv-service.ts, the same
 * function the nice-grpc service calls), map its error to a status (error-status.ts), count it
 * in the same per-method metrics.
 */

/** One directly answered method: the decoded request (or the malformed-request marker) to its answer. */
export type DirectUnaryHandler = (request: never, call: UnaryCallInfo) => Promise<unknown>;

export interface DirectUnaryOptions {
  /** Handlers by full method path (`/kvstore.v1.KVStore/Put`). */
  readonly methods: ReadonlyMap<string, DirectUnaryHandler>;
  /** With auth: the caller named by the call's metadata; throws UnauthenticatedError. Without auth: undefined. */
  readonly authenticate: ((metadata: grpc.Metadata) => AuthSession) | undefined;
  /** The node's gRPC server metrics, when it exports metrics. */
  readonly metrics: GrpcServerMetrics | undefined;
  readonly logger: Logger;
}

/** The interceptor for the public server's options (`interceptors`). */
export function directUnaryInterceptor(options: DirectUnaryOptions): grpc.ServerInterceptor {
  return (method, call) => {
    const handler = options.methods.get(method.path);
    // Any other call passes on as it is: a pass-through ServerInterceptingCall would add a layer
    // to every message of the SDK's OperationStream. grpc-js uses only the interface of what
    // an interceptor returns, so the call below serves as it is.
    if (handler === undefined || method.requestStream || method.responseStream) return call as grpc.ServerInterceptingCall;
    return new DirectUnaryCall(call, method.path, handler, options);
  };
}

/** The first value of a metadata key, as nice-grpc's Metadata.get answers it. */
export function firstMetadataValue(metadata: grpc.Metadata, key: string): grpc.MetadataValue | undefined {
  return metadata.get(key)[0];
}

/** A call's cancellation without an AbortController: one flag, the few listeners a deadline adds. */
class CallCancellation implements CancelSignal {
  aborted = false;
  private listeners: (() => void)[] | undefined;

  addEventListener(_type: 'abort', listener: () => void): void {
    (this.listeners ??= []).push(listener);
  }

  removeEventListener(_type: 'abort', listener: () => void): void {
    const at = this.listeners?.indexOf(listener) ?? -1;
    if (at >= 0) this.listeners!.splice(at, 1);
  }

  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    const listeners = this.listeners ?? [];
    this.listeners = undefined;
    for (const listener of listeners) listener();
  }
}

/**
 * One directly answered call. It starts the call below it (grpc-js's) with its own listener, so
 * the handler grpc-js registered (nice-grpc's) never hears of the call; it reads the one request
 * message, runs the handler at half-close, and sends the answer and status itself.
 */
class DirectUnaryCall extends grpc.ServerInterceptingCall {
  private metadata: grpc.Metadata | undefined;
  private request: unknown;
  private received = false;
  private readonly cancellation = new CallCancellation();

  constructor(
    private readonly next: grpc.ServerInterceptingCallInterface,
    private readonly path: string,
    private readonly handler: DirectUnaryHandler,
    private readonly options: DirectUnaryOptions,
  ) {
    super(next);
  }

  override start(): void {
    this.next.start({
      onReceiveMetadata: (metadata) => {
        this.metadata = metadata;
        this.next.startRead();
      },
      onReceiveMessage: (message) => {
        // As grpc-js's own unary handling answers a second message or none.
        if (this.received) {
          this.next.sendStatus({ code: Status.UNIMPLEMENTED, details: `Received a second request message for unary method ${this.path}`, metadata: null });
          return;
        }
        this.received = true;
        this.request = message;
        this.next.startRead();
      },
      onReceiveHalfClose: () => {
        if (!this.received) {
          this.next.sendStatus({ code: Status.UNIMPLEMENTED, details: `Received no request message for unary method ${this.path}`, metadata: null });
          return;
        }
        // run() answers every failure of the handler itself; this catches a bug in the answering.
        this.run().catch((err: unknown) => this.options.logger.error({ err, method: this.path }, 'answering a unary call failed'));
      },
      onCancel: () => this.cancellation.abort(),
    });
  }

  private async run(): Promise<void> {
    const { metrics, authenticate, logger } = this.options;
    const observed = metrics?.startUnary(this.path);
    const startedMs = performance.now();
    const metadata = this.metadata ?? new grpc.Metadata();
    let code: Status;
    try {
      const session = authenticate?.(metadata);
      rejectIfMalformed(this.request);
      const answer = await this.handler(this.request as never, { deadlineHeader: firstMetadataValue(metadata, deadlineMetadataKey), signal: this.cancellation, session });
      code = Status.OK;
      this.next.sendMessage(answer, () => this.next.sendStatus({ code: Status.OK, details: 'OK', metadata: null }));
    } catch (err) {
      const status = statusOfFailedCall(err, this.path, logger);
      code = status.code;
      this.next.sendStatus({ code: status.code, details: status.details, metadata: null });
    }
    observed?.((this.cancellation.aborted ? Status.CANCELLED : code), (performance.now() - startedMs) / 1000);
  }
}
