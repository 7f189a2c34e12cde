import { ClientError, createChannel, createClientFactory, Metadata, Status, type CallOptions, type Channel } from 'nice-grpc';
import { KVStoreDefinition, type KeyList, type KVStoreClient } from '../../gen/kvstore/v1/kvstore.js';
import { channelCredentials } from './tls.js';
import type { BatchResult } from '../../gen/kvstore/v1/kvstore.js';
import { bearerTokenMiddleware, isValidToken } from './bearer-token.js';
import { CallScope } from './call-scope.js';
import { BatchCallTransport, OperationCoalescer } from './coalescer.js';
import { StreamTransport } from './stream-transport.js';
import {
  fromBackupStatus,
  fromRepairResponse,
  toChangeMembershipRequest,
  fromStatusResponse,
  fromVerifyResponse,
  isBytes,
  isConsistencyLevel,
  parseEndpoints,
  toBuffer,
  toConsistency,
} from './convert.js';
import { deadlineMetadataKey, deadlineMetadataValue } from '../common/deadline-header.js';
import { isNotServingRefusal } from '../common/not-serving.js';
import { isOverloadRefusal } from '../common/overload.js';
import { KvError, toKvError } from './errors.js';
import { channelzOff } from '../common/grpc-options.js';
import type {
  BackupOptions,
  BackupStatus,
  Bytes,
  ConsistencyLevel,
  KvCallOptions,
  KvClientOptions,
  ListKeysOptions,
  LoadBalancing,
  NodeStatus,
  PutResult,
  RepairOptions,
  MembershipChange,
  MembershipChangeResult,
  ChangeMembershipOptions,
  RepairReport,
  StatusOptions,
  VerifyOptions,
  VerifyReport,
} from './types.js';

/** Default deadline of a call: long enough for a quorum write across a LAN with a slow disk. */
export const deadlineMsDefault = 5000;
/** Default deadline of {@link KvClient.verify}: it asks every replica of every ring range. */
export const verifyDeadlineMsDefault = 60_000;
/** Default deadline of {@link KvClient.changeMembership}: every live member must answer, with retries. */
export const changeMembershipDeadlineMsDefault = 30_000;
/** Default deadline of {@link KvClient.repair}: an exchange that copies many records takes minutes. */
export const repairDeadlineMsDefault = 10 * 60 * 1000;
/** setTimeout's largest delay; a longer deadline would fire at once. */
const deadlineMsMax = 2_147_483_647;
/** Default wait for a connection before skipping an endpoint: a LAN connect takes milliseconds. */
export const connectTimeoutMsDefault = 1000;
/** Upper bound of maxAttempts: retries are a failover tool, not a way to wait out an outage. */
export const attemptsMax = 64;
/** Upper bound of channelsPerEndpoint: each is a TCP connection to the node. */
export const channelsPerEndpointMax = 64;
/**
 * With round-robin load balancing, how long an endpoint that failed to connect is passed over
 * (as long as another is available): about grpc-js's longest reconnect backoff in our channel
 * options, so a node that is down costs calls nothing but its periodic reconnect attempts.
 */
export const endpointCooldownMs = 2000;
/** First pause before resending a call a node refused as overloaded; doubled per refusal. */
const overloadPauseMsMin = 5;
/** Longest pause between overload refusals: the call's deadline bounds the whole wait. */
const overloadPauseMsMax = 250;

/** Jittered, growing pause after the `refusals`-th overload refusal of one call (0-based). */
function overloadPauseMs(refusals: number): number {
  const ceiling = Math.min(overloadPauseMsMax, overloadPauseMsMin * 2 ** refusals);
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

/** Whether a call failed because the node refused it as overloaded (it ran nothing). */
function isOverloadRefusalError(error: unknown): boolean {
  const e = error as { code?: unknown; details?: unknown };
  return typeof e.code === 'number' && typeof e.details === 'string' && isOverloadRefusal(e.code, e.details);
}

/** Jittered pause between full rounds over the endpoints, so clients do not retry in lockstep. */
const roundBackoffMsMin = 10;
const roundBackoffMsMax = 100;
/** Largest message the client sends: the node's 32 MiB value ceiling plus framing. */
const messageBytesMax = 40 * 1024 * 1024;
/**
 * No cap on answers: each is bounded by what was asked (a coalesced Batch of puts answers every
 * old value, up to the node's value limit each), and a cap would fail a legitimate one.
 */
const receiveBytesUnlimited = -1;
/** grpc-timeout allows at most 8 digits. */
const grpcTimeoutMsMax = 99_999_999;
/** ListKeysRequest.limit is a uint32. */
const listLimitMax = 0xffff_ffff;

/**
 * Channel defaults. grpc-js backs off reconnects up to 120 s by default, so a node that comes back
 * would stay unused for minutes; we cap the backoff so a recovered node is used within seconds.
 */
const channelOptionsDefault: Record<string, string | number> = {
  ...channelzOff,
  'grpc.initial_reconnect_backoff_ms': 250,
  'grpc.max_reconnect_backoff_ms': 2000,
  // A node may allow values up to 32 MiB (limits.maxValueBytes); grpc-js would refuse any
  // answer over 4 MiB, so a Get (or a Put's old value, or a Batch of them) would fail.
  'grpc.max_receive_message_length': receiveBytesUnlimited,
  'grpc.max_send_message_length': messageBytesMax,
};

/** grpc-js connectivity states (gRPC spec values; grpc-js itself is not a direct dependency). */
const channelReady = 2;
const channelTransientFailure = 3;
const channelShutdown = 4;

const emptyBuffer = Buffer.alloc(0);

/** One node address and its connections. */
interface Endpoint {
  readonly index: number;
  readonly address: string;
  readonly channels: Channel[];
  readonly clients: KVStoreClient[];
  /** One per channel: coalesces that channel's put/get/delete calls (see KvClientOptions.coalesce). */
  readonly coalescers: OperationCoalescer[];
  /** Round-robin position over `channels`. */
  next: number;
  /** When a connection to it last failed (0: never). */
  failedAtMs: number;
}

/** The connection one attempt uses. */
interface Target {
  readonly index: number;
  readonly address: string;
  readonly channel: Channel;
  readonly client: KVStoreClient;
  readonly coalescer: OperationCoalescer;
}

/** How an operation may be retried on another endpoint. */
type RetryPolicy =
  /** Idempotent: retried on UNAVAILABLE, whether answered by a node or by the transport. */
  | 'read'
  /** Mutation: retried only while it has not been sent (the endpoint was not connected). */
  | 'mutation';

/**
 * A client of a kvstore cluster: typed calls over gRPC with per-call deadlines, failover between
 * endpoints and safe retries.
 *
 * The client talks to one endpoint at a time (the current one) and moves to the next when a
 * connection fails. Reads (`get`, `listKeys`, `status`, `backup`, `verify`, `repair`) are retried on the next endpoint
 * when they fail with `UNAVAILABLE`. Mutations (`put`, `delete`) are sent only on a connected
 * channel and are retried only if they were never sent; once sent, any failure is surfaced,
 * because the write may have been applied (see {@link KvError}). Retries stop at `maxAttempts` or
 * at the call's deadline, whichever comes first. Every failure is a {@link KvError}.
 *
 * Connections are made lazily by the first call; call {@link close} when done.
 *
 * @example
 * ```ts
 * import { KvClient } from 'kvstore';
 *
 * const client = new KvClient({ endpoints: ['10.0.0.1:50051', '10.0.0.2:50051'], consistency: 'quorum' });
 * try {
 *   await client.put('user:42', JSON.stringify({ name: 'Ada' }));
 *   const value = await client.getString('user:42');
 *   console.log(value); // {"name":"Ada"}
 * } finally {
 *   client.close();
 * }
 * ```
 */
export class KvClient {
  private readonly endpointList: readonly Endpoint[];
  private readonly deadlineMs: number;
  private readonly consistency: ConsistencyLevel | undefined;
  private readonly maxAttempts: number;
  private readonly connectTimeoutMs: number;
  private readonly coalesce: boolean;
  private readonly loadBalancing: LoadBalancing;
  /** Failover: the endpoint every call starts at. */
  private current = 0;
  /** Round-robin: the endpoint the next call starts at (before skipping cooling ones). */
  private nextStart = 0;
  private closed = false;

  /**
   * Creates a client. No connection is made until the first call.
   *
   * @throws Error if no endpoint is given, an endpoint is not `host:port`, or an option is out of
   *   range.
   *
   * @example
   * ```ts
   * const client = new KvClient({
   *   endpoints: ['127.0.0.1:50051', '127.0.0.1:50052'],
   *   deadlineMs: 2000,
   *   consistency: 'quorum',
   *   channelsPerEndpoint: 4,
   * });
   * ```
   */
  constructor(options: KvClientOptions) {
    if (typeof options !== 'object' || options === null || !Array.isArray(options.endpoints)) {
      throw new Error('KvClient: options.endpoints (an array of host:port) is required');
    }
    const addresses = parseEndpoints(options.endpoints);
    this.deadlineMs = checkDeadline(options.deadlineMs ?? deadlineMsDefault, 'deadlineMs');
    this.connectTimeoutMs = checkDeadline(options.connectTimeoutMs ?? connectTimeoutMsDefault, 'connectTimeoutMs');
    if (options.consistency !== undefined && !isConsistencyLevel(options.consistency)) {
      throw new Error(`KvClient: consistency must be 'one', 'quorum' or 'all', got ${JSON.stringify(options.consistency)}`);
    }
    this.consistency = options.consistency;
    if (options.coalesce !== undefined && typeof options.coalesce !== 'boolean') {
      throw new Error(`KvClient: coalesce must be true or false, got ${JSON.stringify(options.coalesce)}`);
    }
    this.coalesce = options.coalesce ?? true;
    if (options.operationStream !== undefined && typeof options.operationStream !== 'boolean') {
      throw new Error(`KvClient: operationStream must be true or false, got ${JSON.stringify(options.operationStream)}`);
    }
    const operationStream = options.operationStream ?? true;
    if (options.loadBalancing !== undefined && options.loadBalancing !== 'failover' && options.loadBalancing !== 'round-robin') {
      throw new Error(`KvClient: loadBalancing must be 'failover' or 'round-robin', got ${JSON.stringify(options.loadBalancing)}`);
    }
    this.loadBalancing = options.loadBalancing ?? 'failover';
    const attempts = options.maxAttempts ?? addresses.length * 2;
    if (!Number.isInteger(attempts) || attempts < 1) {
      throw new Error(`KvClient: maxAttempts must be a positive integer, got ${String(options.maxAttempts)}`);
    }
    this.maxAttempts = Math.min(attempts, attemptsMax);
    const channelsPerEndpoint = options.channelsPerEndpoint ?? 1;
    if (!Number.isInteger(channelsPerEndpoint) || channelsPerEndpoint < 1 || channelsPerEndpoint > channelsPerEndpointMax) {
      throw new Error(
        `KvClient: channelsPerEndpoint must be an integer from 1 to ${channelsPerEndpointMax}, got ${String(options.channelsPerEndpoint)}`,
      );
    }
    const channelOptions: Record<string, string | number> = {
      ...channelOptionsDefault,
      // grpc-js shares one connection between channels to the same address unless each channel
      // has its own subchannel pool.
      ...(channelsPerEndpoint > 1 ? { 'grpc.use_local_subchannel_pool': 1 } : {}),
      ...options.channelOptions,
    };
    if (options.token !== undefined && !isValidToken(options.token)) {
      throw new Error('KvClient: token must be 1-4096 printable ASCII characters without spaces');
    }
    // With a token, every call (unary, Batch, stream) carries `authorization: Bearer <token>`.
    const clientFactory = options.token === undefined ? createClientFactory() : createClientFactory().use(bearerTokenMiddleware(options.token));
    const credentials = channelCredentials(options.tls);
    this.endpointList = addresses.map((address, index) => {
      const channels = Array.from({ length: channelsPerEndpoint }, () => createChannel(address, credentials, channelOptions));
      const clients = channels.map((channel): KVStoreClient => clientFactory.create(KVStoreDefinition, channel));
      const coalescers = clients.map(
        (client) => new OperationCoalescer(operationStream ? new StreamTransport(client) : new BatchCallTransport(client)),
      );
      return { index, address, channels, clients, coalescers, next: 0, failedAtMs: 0 };
    });
  }

  /**
   * Creates a client from a list of endpoints or a comma-separated string (as in
   * `KVSTORE_ENDPOINTS`). Like the constructor, it does not wait for a connection.
   *
   * @example
   * ```ts
   * const client = KvClient.connect(process.env.KVSTORE_ENDPOINTS ?? '127.0.0.1:50051', { deadlineMs: 1000 });
   * ```
   */
  static connect(endpoints: string | string[], options: Omit<KvClientOptions, 'endpoints'> = {}): KvClient {
    return new KvClient({ ...options, endpoints: parseEndpoints(endpoints) });
  }

  /**
   * The endpoints, in failover order.
   *
   * @example
   * ```ts
   * console.log(client.endpoints); // ['127.0.0.1:50051', '127.0.0.1:50052']
   * ```
   */
  get endpoints(): readonly string[] {
    return this.endpointList.map((endpoint) => endpoint.address);
  }

  /**
   * The endpoint the next call tries first: with failover, the current one (it moves on when a
   * connection fails); with round-robin, the next in turn.
   *
   * @example
   * ```ts
   * await client.get('k');
   * console.log(`served by ${client.currentEndpoint}`);
   * ```
   */
  get currentEndpoint(): string {
    return this.endpointList[this.loadBalancing === 'failover' ? this.current : this.roundRobinStart(Date.now())]!.address;
  }

  /**
   * Stores `value` under `key` and answers the value it replaced.
   *
   * Acknowledged once `consistency` replicas durably committed it. Sent at most once: if it fails
   * after being sent (`UNAVAILABLE`, `DEADLINE_EXCEEDED`), it may still be applied.
   *
   * @example
   * ```ts
   * const { found, oldValue } = await client.put('color', 'blue', { consistency: 'all' });
   * if (found) console.log(`was ${oldValue!.toString()}`);
   * ```
   */
  async put(key: Bytes, value: Bytes, options: KvCallOptions = {}): Promise<PutResult> {
    const operation = 'put';
    this.checkOpen(operation);
    const request = {
      key: checkKey(operation, key),
      value: checkValue(operation, value),
      consistency: this.consistencyOf(operation, options),
    };
    const bytes = request.key.length + request.value.length;
    const response = await this.call(operation, 'mutation', options, (target, scope) =>
      this.coalesces(bytes)
        ? target.coalescer.submit({ put: request }, bytes, scope.deadlineAt, scope).then((r) => resultOf(r, 'put'))
        : target.client.put(request, this.callOptions(scope, true)),
    );
    return response.found ? { found: true, oldValue: response.value } : { found: false };
  }

  /**
   * Reads `key`: its value, or `undefined` if it is absent or deleted.
   *
   * @example
   * ```ts
   * const value = await client.get('color', { consistency: 'quorum', deadlineMs: 500 });
   * if (value === undefined) console.log('no color');
   * ```
   */
  async get(key: Bytes, options: KvCallOptions = {}): Promise<Buffer | undefined> {
    const operation = 'get';
    this.checkOpen(operation);
    const request = { key: checkKey(operation, key), consistency: this.consistencyOf(operation, options) };
    const bytes = request.key.length;
    const response = await this.call(operation, 'read', options, (target, scope) =>
      this.coalesces(bytes)
        ? target.coalescer.submit({ get: request }, bytes, scope.deadlineAt, scope).then((r) => resultOf(r, 'get'))
        : target.client.get(request, this.callOptions(scope, true)),
    );
    return response.found ? response.value : undefined;
  }

  /**
   * Reads `key` and decodes its value as UTF-8; `undefined` if it is absent or deleted.
   *
   * @example
   * ```ts
   * await client.put('greeting', 'héllo');
   * console.log(await client.getString('greeting')); // héllo
   * ```
   */
  async getString(key: Bytes, options: KvCallOptions = {}): Promise<string | undefined> {
    const value = await this.get(key, options);
    return value?.toString('utf8');
  }

  /**
   * Deletes `key` (writes a replicated tombstone) and answers whether a live value existed.
   * Deleting an absent key is not an error. Retried like {@link put}: only if never sent.
   *
   * @example
   * ```ts
   * if (await client.delete('color')) console.log('deleted');
   * ```
   */
  async delete(key: Bytes, options: KvCallOptions = {}): Promise<boolean> {
    const operation = 'delete';
    this.checkOpen(operation);
    const request = { key: checkKey(operation, key), consistency: this.consistencyOf(operation, options) };
    const bytes = request.key.length;
    const response = await this.call(operation, 'mutation', options, (target, scope) =>
      this.coalesces(bytes)
        ? target.coalescer.submit({ delete: request }, bytes, scope.deadlineAt, scope).then((r) => resultOf(r, 'delete'))
        : target.client.delete(request, this.callOptions(scope, true)),
    );
    return response.found;
  }

  /**
   * Lists live keys in ascending byte order, one at a time, reading the node's batches lazily.
   *
   * If the stream breaks with `UNAVAILABLE`, the listing resumes on the next endpoint after the
   * last key received, so no key is repeated or skipped. `deadlineMs` bounds each wait (for a
   * connection and for the next batch), not the whole listing; abort `signal` to stop it, or just
   * `break` out of the loop.
   *
   * @example
   * ```ts
   * for await (const key of client.listKeys({ prefix: 'user:', limit: 100 })) {
   *   console.log(key.toString());
   * }
   * ```
   */
  listKeys(options: ListKeysOptions = {}): AsyncGenerator<Buffer, void, undefined> {
    const batches = this.listKeyBatches(options);
    return (async function* keys() {
      for await (const batch of batches) yield* batch;
    })();
  }

  /**
   * Lists live keys in ascending byte order as the node's batches (non-empty arrays). Same
   * semantics as {@link listKeys}; fewer iterations when keys are processed in bulk.
   *
   * @example
   * ```ts
   * let count = 0;
   * for await (const batch of client.listKeyBatches({ startAfter: 'user:0999' })) count += batch.length;
   * ```
   */
  listKeyBatches(options: ListKeysOptions = {}): AsyncGenerator<Buffer[], void, undefined> {
    const operation = 'listKeys';
    this.checkOpen(operation);
    const prefix = options.prefix === undefined ? emptyBuffer : checkBytes(operation, 'prefix', options.prefix);
    const startAfter = options.startAfter === undefined ? emptyBuffer : checkBytes(operation, 'startAfter', options.startAfter);
    const limit = options.limit ?? 0;
    if (!Number.isInteger(limit) || limit < 0 || limit > listLimitMax) {
      throw invalid(operation, `limit must be an integer from 0 (all) to ${listLimitMax}, got ${String(options.limit)}`);
    }
    const budgetMs = checkCallDeadline(operation, options.deadlineMs ?? this.deadlineMs);
    return this.streamKeys(operation, { prefix, startAfter, limit }, budgetMs, options.signal);
  }

  /**
   * Takes a hot, consistent backup of the answering node (or of every node with `allNodes`) into
   * its backup directory, and describes it. Restore with `kvstore restore --from <path>`.
   *
   * @example
   * ```ts
   * const backup = await client.backup({ allNodes: true, deadlineMs: 60_000 });
   * for (const node of backup.nodes) {
   *   console.log(node.nodeId, node.error || `${node.keyCount} keys in ${node.path}`);
   * }
   * ```
   */
  async backup(options: BackupOptions = {}): Promise<BackupStatus> {
    const operation = 'backup';
    this.checkOpen(operation);
    const request = { allNodes: options.allNodes === true };
    const response = await this.call(operation, 'read', options, ({ client }, scope) => client.backup(request, this.callOptions(scope, true)));
    return fromBackupStatus(response);
  }

  /**
   * Describes the answering node and its view of the cluster: members, reachability, the
   * replication backlog towards each and the last anti-entropy exchange with each.
   *
   * @example
   * ```ts
   * const status = await client.status();
   * for (const member of status.members) {
   *   if (!member.reachable) console.warn(`${member.nodeId}: ${member.backlogEntries} writes waiting`);
   *   if (member.lastExchangeError !== undefined) console.warn(`${member.nodeId}: anti-entropy failed: ${member.lastExchangeError}`);
   * }
   * ```
   */
  async status(options: StatusOptions = {}): Promise<NodeStatus> {
    const operation = 'status';
    this.checkOpen(operation);
    const response = await this.call(operation, 'read', options, ({ client }, scope) => client.status({}, this.callOptions(scope, true)));
    return fromStatusResponse(response);
  }

  /**
   * Compares, for every ring range, the hash-tree root of each replica and reports which ranges
   * disagree. Read-only; the answering node asks the other members. A range whose replica could
   * not be asked counts as differing (its entry has an `error`).
   *
   * Retried on another endpoint like a read. Default deadline: 60 s (not the client's
   * `deadlineMs`).
   *
   * @example
   * ```ts
   * const report = await client.verify();
   * if (report.differingRanges === 0) {
   *   console.log(`${report.ranges.length} ranges, all replicas agree`);
   * } else {
   *   for (const range of report.ranges.filter((r) => !r.agree)) {
   *     console.log(range.range, range.replicas.map((r) => `${r.nodeId}=${r.error ?? r.digest}`).join(' '));
   *   }
   * }
   * ```
   */
  async verify(options: VerifyOptions = {}): Promise<VerifyReport> {
    const operation = 'verify';
    this.checkOpen(operation);
    const callOptions = { ...options, deadlineMs: options.deadlineMs ?? verifyDeadlineMsDefault };
    const response = await this.call(operation, 'read', callOptions, ({ client }, scope) => client.verify({}, this.callOptions(scope, true)));
    return fromVerifyResponse(response);
  }

  /**
   * Runs an anti-entropy exchange now between the answering node and each of its peers (the
   * exchange the node runs in the background every `antiEntropy.intervalSeconds`) and reports
   * what it copied. Only the answering node's exchanges run: to repair every pair, call it on
   * each node (as `kvctl repair` does for every endpoint).
   *
   * Safe to repeat, so retried on another endpoint like a read (the repair then runs there).
   * Default deadline: 10 minutes (not the client's `deadlineMs`). A failed exchange with one
   * peer is reported in its entry's `error`, not thrown.
   *
   * @example
   * ```ts
   * const report = await client.repair({ deadlineMs: 30 * 60_000 });
   * for (const peer of report.peers) {
   *   if (peer.error !== undefined) console.error(`${peer.nodeId}: ${peer.error}`);
   *   else console.log(`${peer.nodeId}: pulled ${peer.recordsPulled}, pushed ${peer.recordsPushed}`);
   * }
   * ```
   */
  async repair(options: RepairOptions = {}): Promise<RepairReport> {
    const operation = 'repair';
    this.checkOpen(operation);
    const callOptions = { ...options, deadlineMs: options.deadlineMs ?? repairDeadlineMsDefault };
    const response = await this.call(operation, 'read', callOptions, ({ client }, scope) => client.repair({}, this.callOptions(scope, true)));
    return fromRepairResponse(response);
  }

  /**
   * Asks the cluster to change its membership (admin). Resolves once every live member has
   * agreed and the new membership is committed. Not retried on another endpoint once sent (a
   * second attempt of a committed change is refused as already done). For add, remove and
   * replace it resolves once the change has started (phase pending): the data then moves in the
   * background; Status's `membershipChange` shows it until it is over (`kvctl member wait`).
   * Refusals (a change already in progress, an unknown member, ...) are FAILED_PRECONDITION;
   * members that must agree and did not answer, UNAVAILABLE naming them.
   *
   * @example
   * ```ts
   * const { epoch } = await admin.changeMembership({ kind: 'mark-dead', nodeId: 'n3' });
   * ```
   */
  async changeMembership(change: MembershipChange, options: ChangeMembershipOptions = {}): Promise<MembershipChangeResult> {
    const operation = 'changeMembership';
    this.checkOpen(operation);
    const callOptions = { ...options, deadlineMs: options.deadlineMs ?? changeMembershipDeadlineMsDefault };
    const request = toChangeMembershipRequest(change);
    const response = await this.call(operation, 'mutation', callOptions, ({ client }, scope) => client.changeMembership(request, this.callOptions(scope, true)));
    return { epoch: Number(response.epoch), description: response.description };
  }

  /**
   * Closes every connection. Calls in flight fail; later calls throw `FAILED_PRECONDITION`.
   * Closing twice is harmless.
   *
   * @example
   * ```ts
   * const client = KvClient.connect('127.0.0.1:50051');
   * try {
   *   await client.put('k', 'v');
   * } finally {
   *   client.close();
   * }
   * ```
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const endpoint of this.endpointList) {
      // Streams first: an open OperationStream would keep the process alive.
      for (const coalescer of endpoint.coalescers) coalescer.close();
      for (const channel of endpoint.channels) channel.close();
    }
  }

  // ---------------------------------------------------------------------------------------------

  private checkOpen(operation: string): void {
    if (this.closed) throw new KvError(Status.FAILED_PRECONDITION, 'the client is closed', '', { operation });
  }

  private consistencyOf(operation: string, options: KvCallOptions) {
    const level = options.consistency ?? this.consistency;
    if (level !== undefined && !isConsistencyLevel(level)) {
      throw invalid(operation, `consistency must be 'one', 'quorum' or 'all', got ${JSON.stringify(level)}`);
    }
    return toConsistency(level);
  }

  /** Whether a put/get/delete with `bytes` of key and value is coalesced (stream message or Batch call). */
  private coalesces(bytes: number): boolean {
    return this.coalesce && OperationCoalescer.accepts(bytes);
  }

  /** The connection attempt number `position` uses: endpoints in order, channels round-robin. */
  private target(position: number): Target {
    const endpoint = this.endpointList[position % this.endpointList.length]!;
    const slot = endpoint.next;
    endpoint.next = (slot + 1) % endpoint.channels.length;
    return {
      index: endpoint.index,
      address: endpoint.address,
      channel: endpoint.channels[slot]!,
      client: endpoint.clients[slot]!,
      coalescer: endpoint.coalescers[slot]!,
    };
  }

  /** The endpoint a call starts at (see KvClientOptions.loadBalancing). */
  private startPosition(): number {
    if (this.loadBalancing === 'failover') return this.current;
    const start = this.roundRobinStart(Date.now());
    this.nextStart = (start + 1) % this.endpointList.length;
    return start;
  }

  /** The first endpoint from `nextStart` on that is not cooling down after a failure (else `nextStart`). */
  private roundRobinStart(nowMs: number): number {
    const count = this.endpointList.length;
    for (let i = 0; i < count; i++) {
      const position = (this.nextStart + i) % count;
      if (nowMs - this.endpointList[position]!.failedAtMs >= endpointCooldownMs) return position;
    }
    return this.nextStart;
  }

  /** Moves the current endpoint past `index` after a connection failure there. */
  private failover(index: number): void {
    this.endpointList[index]!.failedAtMs = Date.now();
    // Several calls may fail on the same endpoint at once: move on once, not once per call.
    if (this.current === index) this.current = (index + 1) % this.endpointList.length;
  }

  /**
   * Waits until the target's channel is connected. Answers `undefined` when it is, or the error
   * that explains why the endpoint is skipped (the caller checks `scope.aborted` first). A channel
   * already failing to connect is skipped at once, as gRPC's fail-fast calls do.
   */
  private async connect(target: Target, scope: CallScope, operation: string): Promise<KvError | undefined> {
    const { channel } = target;
    const until = Math.min(scope.deadlineAt, Date.now() + this.connectTimeoutMs);
    for (;;) {
      const state: number = channel.getConnectivityState(true);
      if (state === channelReady) return undefined;
      if (state === channelTransientFailure || state === channelShutdown) {
        return unreachableError(operation, target.address, 'could not connect (connection refused or failing)');
      }
      if (scope.aborted) return unreachableError(operation, target.address, 'aborted while connecting');
      if (Date.now() >= until) {
        return unreachableError(operation, target.address, `not connected within ${this.connectTimeoutMs}ms`);
      }
      const changed = await new Promise<boolean>((resolve) => {
        const onAbort = (): void => resolve(false);
        scope.signal.addEventListener('abort', onAbort, { once: true });
        channel.watchConnectivityState(state as Parameters<Channel['watchConnectivityState']>[0], until, (error) => {
          scope.signal.removeEventListener('abort', onAbort);
          resolve(error === undefined);
        });
      });
      if (!changed && !scope.aborted) {
        return unreachableError(operation, target.address, `not connected within ${this.connectTimeoutMs}ms`);
      }
    }
  }

  /**
   * Call options of one attempt: the scope's signal and its deadline, told to the node too, both
   * relative (grpc-timeout) and absolute (so a node that reads the call only after the deadline
   * passed, say when a partition heals, refuses it rather than applying it: kvstore.proto).
   */
  private callOptions(scope: CallScope, withDeadline: boolean): CallOptions {
    if (!withDeadline) return { signal: scope.signal };
    // The gRPC wire deadline lets the node stop waiting for replicas when we stop waiting for it.
    const remainingMs = Math.min(grpcTimeoutMsMax, Math.max(1, Math.ceil(scope.remainingMs())));
    const metadata = Metadata().set('grpc-timeout', `${remainingMs}m`);
    const deadline = deadlineMetadataValue(scope.deadlineAt);
    if (deadline !== undefined) metadata.set(deadlineMetadataKey, deadline);
    return { signal: scope.signal, metadata };
  }

  /** Runs a unary call with the deadline, failover and retry rules of `policy`. */
  private async call<T>(
    operation: string,
    policy: RetryPolicy,
    options: KvCallOptions,
    send: (target: Target, scope: CallScope) => Promise<T>,
  ): Promise<T> {
    const scope = new CallScope(checkCallDeadline(operation, options.deadlineMs ?? this.deadlineMs), options.signal);
    const start = this.startPosition();
    const count = this.endpointList.length;
    let lastUnreachable: KvError | undefined;
    let lastAnswered: KvError | undefined;
    let endpoint = this.endpointList[start]!.address;
    try {
      for (let attempt = 0; attempt < this.maxAttempts; attempt++) {
        if (attempt > 0 && attempt % count === 0) await scope.sleep(roundBackoffMs());
        if (scope.aborted) throw scope.abortError(operation, endpoint, lastAnswered === undefined);
        const target = this.target(start + attempt);
        endpoint = target.address;
        const skipped = await this.connect(target, scope, operation);
        if (scope.aborted) throw scope.abortError(operation, endpoint, lastAnswered === undefined);
        // close() may have run while this call waited for the connection: nothing was sent.
        this.checkOpen(operation);
        if (skipped !== undefined) {
          lastUnreachable = skipped;
          this.failover(target.index);
          continue;
        }
        let overloadRefusals = 0;
        let overloadGaveUp: KvError | undefined;
        try {
          for (;;) {
            try {
              return await send(target, scope);
            } catch (error) {
              if (scope.aborted || !isOverloadRefusalError(error)) throw error;
            }
            // The node refused the call as overloaded before running anything (kvstore.proto), so
            // even a put or delete may be sent again: after a pause, to the same node, until the
            // deadline. The pauses grow so that refused clients back off together.
            await scope.sleep(overloadPauseMs(overloadRefusals++));
            if (scope.aborted) {
              overloadGaveUp = scope.abortError(operation, endpoint, false, false, `the node stayed overloaded for ${scope.budgetMs}ms (refused ${overloadRefusals} times; nothing was applied)`);
              throw overloadGaveUp;
            }
          }
        } catch (error) {
          if (error === overloadGaveUp) throw error;
          if (scope.aborted) throw scope.abortError(operation, endpoint, false, policy === 'mutation');
          const failure = toKvError(error, operation, endpoint);
          // The node serves nothing (not added yet, leaving, removed, dead) and ran nothing: even a
          // put or delete goes to the next endpoint.
          if (isNotServingRefusal(failure.code, failure.details)) {
            lastAnswered = failure;
            this.failover(target.index);
            continue;
          }
          // A mutation that was sent may have been applied: never send it again.
          if (policy === 'mutation' || failure.code !== Status.UNAVAILABLE) throw failure;
          if (target.channel.getConnectivityState(false) === channelReady) {
            lastAnswered = failure;
          } else {
            lastUnreachable = unreachableError(operation, endpoint, `connection lost: ${failure.details}`);
            this.failover(target.index);
          }
        }
      }
      throw this.exhausted(operation, lastAnswered, lastUnreachable);
    } finally {
      scope.dispose();
    }
  }

  /** The error once every attempt failed: the last node's answer, or "cannot connect". */
  private exhausted(operation: string, lastAnswered: KvError | undefined, lastUnreachable: KvError | undefined): KvError {
    if (lastAnswered !== undefined) return lastAnswered;
    const tried = this.endpoints.join(', ');
    const last = lastUnreachable === undefined ? '' : `; last: ${lastUnreachable.endpoint}: ${lastUnreachable.details}`;
    return new KvError(
      Status.UNAVAILABLE,
      `cannot connect to any endpoint (${tried}) after ${this.maxAttempts} attempts${last}`,
      lastUnreachable?.endpoint ?? '',
      { operation, unreachable: true, cause: lastUnreachable },
    );
  }

  /** The ListKeys stream with resume-after-last-key on UNAVAILABLE. */
  private async *streamKeys(
    operation: string,
    request: { prefix: Buffer; startAfter: Buffer; limit: number },
    budgetMs: number,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<Buffer[], void, undefined> {
    const scope = new CallScope(budgetMs, signal);
    const count = this.endpointList.length;
    const unlimited = request.limit === 0;
    let remaining = request.limit;
    let startAfter = request.startAfter;
    let position = this.startPosition();
    let attemptsWithoutProgress = 0;
    let lastUnreachable: KvError | undefined;
    let lastAnswered: KvError | undefined;
    let endpoint = this.endpointList[position]!.address;
    try {
      for (;;) {
        if (attemptsWithoutProgress >= this.maxAttempts) throw this.exhausted(operation, lastAnswered, lastUnreachable);
        if (attemptsWithoutProgress > 0 && attemptsWithoutProgress % count === 0) await scope.sleep(roundBackoffMs());
        if (scope.aborted) throw scope.abortError(operation, endpoint, lastAnswered === undefined);
        const target = this.target(position);
        endpoint = target.address;
        position += 1;
        attemptsWithoutProgress += 1;
        const skipped = await this.connect(target, scope, operation);
        if (scope.aborted) throw scope.abortError(operation, endpoint, lastAnswered === undefined);
        if (skipped !== undefined) {
          lastUnreachable = skipped;
          this.failover(target.index);
          continue;
        }
        // No wire deadline: the budget restarts with every batch, the node cannot know that.
        const stream = target.client.listKeys(
          { prefix: request.prefix, startAfter, limit: unlimited ? 0 : remaining },
          this.callOptions(scope, false),
        );
        const iterator = stream[Symbol.asyncIterator]();
        try {
          for (;;) {
            let result: IteratorResult<KeyList>;
            try {
              result = await iterator.next();
            } catch (error) {
              if (scope.aborted) {
                throw scope.abortError(operation, endpoint, false, false, `no batch of keys within ${budgetMs}ms`);
              }
              const failure = toKvError(error, operation, endpoint);
              if (failure.code !== Status.UNAVAILABLE) throw failure;
              if (target.channel.getConnectivityState(false) === channelReady) {
                lastAnswered = failure;
              } else {
                lastUnreachable = unreachableError(operation, endpoint, `connection lost: ${failure.details}`);
                this.failover(target.index);
              }
              break; // resume on the next endpoint after the last key received
            }
            if (result.done === true) return;
            let keys = result.value.keys;
            if (keys.length === 0) {
              scope.arm(); // an empty batch still shows the stream is alive
              continue;
            }
            if (!unlimited) {
              if (keys.length > remaining) keys = keys.slice(0, remaining);
              remaining -= keys.length;
            }
            startAfter = keys[keys.length - 1]!;
            attemptsWithoutProgress = 0;
            lastAnswered = undefined;
            lastUnreachable = undefined;
            // The consumer's time with a batch does not count against the deadline.
            scope.disarm();
            yield keys;
            scope.arm();
            if (!unlimited && remaining === 0) return;
          }
        } finally {
          // Cancels the call if it is still open (early return, break or error in the consumer).
          await iterator.return?.().catch(() => undefined);
        }
      }
    } finally {
      scope.dispose();
    }
  }
}

/** The answer of kind `kind` in a batch result (a node that answers another kind has a bug). */
function resultOf<K extends 'put' | 'get' | 'delete'>(result: BatchResult, kind: K): NonNullable<BatchResult[K]> {
  const answer = result[kind];
  if (answer === undefined || answer === null) {
    throw new ClientError(`/${KVStoreDefinition.fullName}/${KVStoreDefinition.methods.batch.name}`, Status.INTERNAL, `the node answered a ${kind} operation with another kind of result`);
  }
  return answer as NonNullable<BatchResult[K]>;
}

function roundBackoffMs(): number {
  return roundBackoffMsMin + Math.random() * (roundBackoffMsMax - roundBackoffMsMin);
}

function unreachableError(operation: string, endpoint: string, details: string): KvError {
  return new KvError(Status.UNAVAILABLE, details, endpoint, { operation, unreachable: true });
}

function invalid(operation: string, details: string): KvError {
  return new KvError(Status.INVALID_ARGUMENT, details, '', { operation });
}

function checkBytes(operation: string, name: string, value: unknown): Buffer {
  if (!isBytes(value)) throw invalid(operation, `${name} must be a string or a Uint8Array, got ${typeof value}`);
  return toBuffer(value);
}

function checkKey(operation: string, key: unknown): Buffer {
  const bytes = checkBytes(operation, 'key', key);
  if (bytes.length === 0) throw invalid(operation, 'key must not be empty');
  return bytes;
}

function checkValue(operation: string, value: unknown): Buffer {
  return checkBytes(operation, 'value', value);
}

function isValidDeadline(ms: unknown): ms is number {
  return typeof ms === 'number' && Number.isFinite(ms) && ms > 0 && ms <= deadlineMsMax;
}

function checkDeadline(ms: unknown, name: string): number {
  if (!isValidDeadline(ms)) {
    throw new Error(`KvClient: ${name} must be a number of milliseconds from 1 to ${deadlineMsMax}, got ${String(ms)}`);
  }
  return ms;
}

function checkCallDeadline(operation: string, ms: unknown): number {
  if (!isValidDeadline(ms)) {
    throw invalid(operation, `deadlineMs must be a number of milliseconds from 1 to ${deadlineMsMax}, got ${String(ms)}`);
  }
  return ms;
}
