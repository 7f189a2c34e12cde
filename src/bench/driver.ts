/**
 * How a worker issues operations: through the SDK (KvClient: per-call deadline timer, failover,
 * retries of reads, coalescing into Batch RPCs unless turned off) or through bare grpc-js clients with gen/'s codecs (one request object and one call;
 * the deadline travels as grpc-timeout and the node enforces it). Both spread a thread's channels
 * over the endpoints the same way, so their numbers are comparable.
 */
import * as grpc from '@grpc/grpc-js';
import { ClientError, Status } from 'nice-grpc';
import { Key, KeyValue, KVStoreDefinition } from '../../gen/kvstore/v1/kvstore.js';
import { toConsistency } from '../client/convert.js';
import { KvClient, KvError, channelsPerEndpointMax, statusName, type ConsistencyLevel } from '../client/index.js';
import type { ClientKind } from './options.js';
import type { OpName } from './workload.js';
import { channelzOff } from '../common/grpc-options.js';
import { etcdUnaryCalls } from './etcd-calls.js';

/** How long a worker waits for all its channels to connect before giving up. */
export const connectTimeoutMs = 10_000;
/** Values may exceed grpc-js's default 4 MiB receive limit (get of a large value). */
const receiveBytesUnlimited = -1;
/** Cap the reconnect backoff (grpc-js default 120 s) so a restarted node is used again quickly. */
const channelOptions = {
  ...channelzOff,
  'grpc.max_receive_message_length': receiveBytesUnlimited,
  'grpc.initial_reconnect_backoff_ms': 250,
  'grpc.max_reconnect_backoff_ms': 2000,
  // Each channel its own TCP connection, even to the same address.
  'grpc.use_local_subchannel_pool': 1,
} as const;

/**
 * TLS name bench clients send and check (the dev node certificates name localhost): the endpoints
 * are IP addresses, which are not valid TLS server names.
 */
export const benchTlsChannelOptions = { 'grpc.ssl_target_name_override': 'localhost' } as const;

/** grpc-js connectivity states. */
const channelReady = 2;
const channelTransientFailure = 3;
const channelShutdown = 4;

export interface Driver {
  /** Connects every channel; rejects with a {@link ConnectError} naming the endpoint. */
  connect(): Promise<void>;
  /** Runs one operation on channel `slot`; rejects with the call's error. */
  exec(op: OpName, slot: number, key: Buffer, value: Buffer, signal: AbortSignal): Promise<void>;
  close(): void;
}

/** No channel to an endpoint could be connected. */
export class ConnectError extends Error {
  override readonly name = 'ConnectError';
}

/** The gRPC status code name of an operation's failure (`CANCELLED` for an abort). */
export function errorCodeName(error: unknown): string {
  if (KvError.isKvError(error)) return statusName(error.code);
  if (error instanceof ClientError) return statusName(error.code);
  if (error instanceof Error && error.name === 'AbortError') return statusName(Status.CANCELLED);
  return statusName(Status.UNKNOWN);
}

/** A one-line description of an operation's failure. */
export function errorMessage(error: unknown): string {
  if (error instanceof ClientError) return `${statusName(error.code)}: ${error.details}`;
  return error instanceof Error ? error.message : String(error);
}

export function createDriver(kind: ClientKind, options: { endpoints: string[]; channelEndpoints: string[]; consistency: ConsistencyLevel | undefined; timeoutMs: number; token: string | undefined; tlsCa: string | undefined }): Driver {
  if (kind === 'raw') return new RawDriver(options, kvstoreUnaryCalls(toConsistency(options.consistency)));
  if (kind === 'etcd') return new RawDriver(options, etcdUnaryCalls(options.consistency));
  return new SdkDriver({ ...options, coalesce: kind !== 'sdk-no-coalesce', operationStream: kind === 'sdk' });
}

/** The channel under a grpc-js client. */
type ClientChannel = ReturnType<grpc.Client['getChannel']>;

/** Waits until `channel` is READY; fails at once on TRANSIENT_FAILURE (refused) or at the deadline. */
async function waitReady(channel: ClientChannel, address: string, deadlineAt: number): Promise<void> {
  for (;;) {
    const state: number = channel.getConnectivityState(true);
    if (state === channelReady) return;
    if (state === channelTransientFailure || state === channelShutdown) {
      throw new ConnectError(`cannot connect to ${address}: connection refused or failing`);
    }
    if (Date.now() >= deadlineAt) throw new ConnectError(`cannot connect to ${address}: not connected within ${connectTimeoutMs} ms`);
    await new Promise<void>((resolve) => {
      channel.watchConnectivityState(state as Parameters<ClientChannel['watchConnectivityState']>[0], deadlineAt, () => resolve());
    });
  }
}

/**
 * One unary call per operation on bare grpc-js (`Client.makeUnaryRequest` with the generated
 * codecs): the leanest way a Node program can call the API without the SDK, and so the nearest
 * this load generator gets to a client in another language. Its cost sits on the same two cores
 * as the nodes it measures (BENCHMARKS.md): nice-grpc's client around the same call added an
 * AbortSignal listener and a metadata conversion per call.
 */
class RawDriver implements Driver {
  private readonly clients: grpc.Client[];
  private readonly metadata: grpc.Metadata;
  /** Each loop's call in flight (a loop has at most one), cancelled when its signal aborts. */
  private readonly inFlight = new Map<AbortSignal, grpc.ClientUnaryCall>();
  private readonly watched = new WeakSet<AbortSignal>();

  constructor(
    private readonly options: { channelEndpoints: string[]; timeoutMs: number; token: string | undefined; tlsCa: string | undefined },
    private readonly calls: UnaryCalls,
  ) {
    const credentials = options.tlsCa === undefined ? grpc.credentials.createInsecure() : grpc.credentials.createSsl(Buffer.from(options.tlsCa));
    const options2 = options.tlsCa === undefined ? channelOptions : { ...channelOptions, ...benchTlsChannelOptions };
    this.clients = options.channelEndpoints.map((address) => new grpc.Client(address, credentials, options2));
    this.metadata = new grpc.Metadata();
    if (options.token !== undefined) this.metadata.set('authorization', `Bearer ${options.token}`);
  }

  async connect(): Promise<void> {
    const deadlineAt = Date.now() + connectTimeoutMs;
    await Promise.all(this.clients.map((client, i) => waitReady(client.getChannel(), this.options.channelEndpoints[i]!, deadlineAt)));
  }

  exec(op: OpName, slot: number, key: Buffer, value: Buffer, signal: AbortSignal): Promise<void> {
    if (signal.aborted) return Promise.reject(abortError());
    if (!this.watched.has(signal)) {
      this.watched.add(signal);
      signal.addEventListener('abort', () => this.inFlight.get(signal)?.cancel(), { once: true });
    }
    const path = this.calls.paths[op];
    const request = this.calls.encode(op, key, value);
    return new Promise<void>((resolve, reject) => {
      const call = this.clients[slot]!.makeUnaryRequest(path, sendAsIs, decodeNothing, request, this.metadata, { deadline: Date.now() + this.options.timeoutMs }, (error) => {
        this.inFlight.delete(signal);
        if (error === null) resolve();
        else reject(error.code === Status.CANCELLED && signal.aborted ? abortError() : new ClientError(path, error.code, error.details));
      });
      this.inFlight.set(signal, call);
    });
  }

  close(): void {
    for (const client of this.clients) client.close();
  }
}

/** The unary methods of one API and how an operation's request is encoded for them. */
export interface UnaryCalls {
  readonly paths: Readonly<Record<OpName, string>>;
  encode(op: OpName, key: Buffer, value: Buffer): Buffer;
}

/** kvstore's own unary Get, Put and Delete, encoded with gen/'s codecs. */
function kvstoreUnaryCalls(consistency: number): UnaryCalls {
  const path = (name: string): string => `/${KVStoreDefinition.fullName}/${name}`;
  const bytes = (encoded: { finish(): Uint8Array }): Buffer => {
    const out = encoded.finish();
    return Buffer.from(out.buffer, out.byteOffset, out.byteLength);
  };
  return {
    paths: { get: path(KVStoreDefinition.methods.get.name), put: path(KVStoreDefinition.methods.put.name), delete: path(KVStoreDefinition.methods.delete.name) },
    encode: (op, key, value) => (op === 'put' ? bytes(KeyValue.encode({ key, value, consistency })) : bytes(Key.encode({ key, consistency }))),
  };
}

/** The request is encoded by {@link UnaryCalls.encode} before the call. */
const sendAsIs = (request: Buffer): Buffer => request;

/** The answers are not looked at: only whether the call succeeded. */
const decodeNothing = (): undefined => undefined;

function abortError(): Error {
  const error = new Error('the operation was aborted');
  error.name = 'AbortError';
  return error;
}

class SdkDriver implements Driver {
  /** One client per endpoint this thread has channels to, that endpoint first (then failover). */
  private readonly clientsByEndpoint = new Map<string, { client: KvClient; channels: number }>();
  private readonly slotClients: KvClient[];

  constructor(options: { endpoints: string[]; channelEndpoints: string[]; consistency: ConsistencyLevel | undefined; timeoutMs: number; token: string | undefined; tlsCa: string | undefined; coalesce: boolean; operationStream: boolean }) {
    const counts = new Map<string, number>();
    for (const address of options.channelEndpoints) counts.set(address, (counts.get(address) ?? 0) + 1);
    for (const [address, count] of counts) {
      const start = Math.max(0, options.endpoints.indexOf(address));
      const rotated = [...options.endpoints.slice(start), ...options.endpoints.slice(0, start)];
      const channels = Math.min(count, channelsPerEndpointMax);
      const client = new KvClient({
        endpoints: rotated.length > 0 ? rotated : [address],
        deadlineMs: options.timeoutMs,
        channelsPerEndpoint: channels,
        coalesce: options.coalesce,
        operationStream: options.operationStream,
        channelOptions: { 'grpc.max_receive_message_length': receiveBytesUnlimited, ...(options.tlsCa === undefined ? {} : benchTlsChannelOptions) },
        ...(options.token === undefined ? {} : { token: options.token }),
        ...(options.tlsCa === undefined ? {} : { tls: { ca: options.tlsCa } }),
        ...(options.consistency === undefined ? {} : { consistency: options.consistency }),
      });
      this.clientsByEndpoint.set(address, { client, channels });
    }
    this.slotClients = options.channelEndpoints.map((address) => this.clientsByEndpoint.get(address)!.client);
  }

  async connect(): Promise<void> {
    // A call round-robins over the client's channels: one status call per channel opens each.
    await Promise.all(
      [...this.clientsByEndpoint.entries()].flatMap(([address, { client, channels }]) =>
        Array.from({ length: channels }, () =>
          client.status({ deadlineMs: connectTimeoutMs }).catch((error: unknown) => {
            throw new ConnectError(`cannot connect to ${address}: ${errorMessage(error)}`);
          }),
        ),
      ),
    );
  }

  async exec(op: OpName, slot: number, key: Buffer, value: Buffer, signal: AbortSignal): Promise<void> {
    const client = this.slotClients[slot]!;
    switch (op) {
      case 'get':
        await client.get(key, { signal });
        return;
      case 'put':
        await client.put(key, value, { signal });
        return;
      case 'delete':
        await client.delete(key, { signal });
        return;
    }
  }

  close(): void {
    for (const { client } of this.clientsByEndpoint.values()) client.close();
  }
}
