/**
 * Public types of the kvstore SDK: options, call options and the plain result objects.
 *
 * Everything here is plain data: no gRPC types, no bigint (64-bit counters become `number`, exact
 * up to 2^53, far beyond any count or size a node reports), dates as `Date`.
 */

/** Consistency of one request: how many of the key's replicas must answer. */
export type ConsistencyLevel = 'one' | 'quorum' | 'all';

/** The consistency levels, in the order of increasing strength. */
export const consistencyLevels: readonly ConsistencyLevel[] = ['one', 'quorum', 'all'];

/** A key or a value: a string is encoded as UTF-8, bytes are sent as they are. */
export type Bytes = string | Uint8Array;

/** Options of {@link KvClient}. Only `endpoints` is required. */
export interface KvClientOptions {
  /**
   * Node addresses as `host:port` (IPv6 as `[::1]:50051`), at least one. Any node coordinates
   * any request; see `loadBalancing` for how calls are spread over them.
   */
  endpoints: string[];
  /**
   * `'failover'` (default): every call goes to the current endpoint, and the client moves to
   * the next one only when it cannot reach it. `'round-robin'`: successive calls start at
   * successive endpoints, spreading the coordinator work over the nodes; an endpoint that failed
   * to connect in the last 2 s (`endpointCooldownMs`) is passed over while another is available.
   * Retries on other endpoints follow the same rules either way.
   */
  loadBalancing?: LoadBalancing;
  /** Default deadline of each call in milliseconds (default 5000). */
  deadlineMs?: number;
  /** Default consistency of every call (default: the node's configured default). */
  consistency?: ConsistencyLevel;
  /**
   * Maximum attempts of one call across endpoints, counting skipped (unreachable) endpoints
   * (default `endpoints.length * 2`, at most 64). Every attempt is also bounded by the deadline.
   */
  maxAttempts?: number;
  /**
   * Separate connections (HTTP/2 sessions) per endpoint; calls spread over them round-robin
   * (default 1, at most 64). More than one helps a single client drive high throughput.
   */
  channelsPerEndpoint?: number;
  /**
   * How long one attempt waits for a connection to an endpoint before skipping to the next one,
   * in milliseconds (default 1000; never more than the call's remaining deadline). An endpoint
   * whose connection is already known to be failing is skipped at once.
   */
  connectTimeoutMs?: number;
  /**
   * Extra @grpc/grpc-js channel options (e.g. `grpc.keepalive_time_ms`), merged over the SDK's
   * own (`grpc.initial_reconnect_backoff_ms` 250, `grpc.max_reconnect_backoff_ms` 2000).
   */
  channelOptions?: Record<string, string | number>;
  /**
   * Send the `put`, `get` and `delete` calls made on one connection in the same event-loop turn
   * together, as one OperationStream message or Batch call (default true; see
   * `operationStream`). Each call keeps its own result, error, deadline and retry rules; only the
   * transport is shared. Under concurrency this multiplies what a node serves per CPU second; a
   * lone call is not delayed by a timer, only to the end of the current turn. Calls with more
   * than 64 KiB of key and value always go alone, as unary calls.
   */
  coalesce?: boolean;
  /**
   * How coalesced calls travel (default true): as messages on one long-lived OperationStream per
   * connection, answered as each finishes; false sends each group as one Batch call. A stream
   * message costs a fraction of a call (a lone get is 2-3x faster on our test machine), and a
   * node without OperationStream is detected and sent Batch calls instead (or unary calls, for a
   * node without Batch either). No effect with `coalesce: false`.
   */
  operationStream?: boolean;
  /**
   * TLS towards the nodes (for nodes with `tls` in their config); unset: plaintext. The node's
   * certificate must name the endpoint's host (DNS name or IP address, as `kvstore certs` writes
   * for localhost and 127.0.0.1).
   */
  tls?: KvTlsOptions;
  /**
   * Bearer token of the user to act as, for nodes that run with `auth.usersFile`: sent as
   * `authorization: Bearer <token>` metadata with every call (a stream sends it when it opens).
   * Printable ASCII without spaces, as `kvstore auth token` makes them. Without it, such a node
   * answers `UNAUTHENTICATED`. Use it with TLS on any network but loopback: the token is a password.
   */
  token?: string;
}

/** TLS material of a client (KvClientOptions.tls), each a PEM string or its bytes. */
export interface KvTlsOptions {
  /** CA certificate(s) that signed the nodes' certificates (default: the system's trusted roots). */
  ca?: string | Uint8Array;
  /** Client certificate chain, for nodes with `tls.clientCaFile`; requires `key`. */
  cert?: string | Uint8Array;
  /** Private key of `cert`. */
  key?: string | Uint8Array;
}

/** How a client spreads calls over its endpoints (KvClientOptions.loadBalancing). */
export type LoadBalancing = 'failover' | 'round-robin';

/** Options of one call; each overrides the client's default. */
export interface KvCallOptions {
  /** Deadline of this call in milliseconds (retries included). */
  deadlineMs?: number;
  /** Consistency of this call. */
  consistency?: ConsistencyLevel;
  /** Aborting this signal cancels the call; it then rejects with a `CANCELLED` {@link KvError}. */
  signal?: AbortSignal;
}

/** Options of {@link KvClient.listKeys} and {@link KvClient.listKeyBatches}. */
export interface ListKeysOptions {
  /** Only keys starting with these bytes. */
  prefix?: Bytes;
  /** Only keys strictly greater than this one (continue a listing after its last key). */
  startAfter?: Bytes;
  /** At most this many keys in total (default: all). */
  limit?: number;
  /**
   * Longest wait for the connection and for each next batch, in milliseconds (default: the
   * client's `deadlineMs`). It does not bound the whole listing: use `signal` for that.
   */
  deadlineMs?: number;
  /** Aborting this signal stops the listing with a `CANCELLED` {@link KvError}. */
  signal?: AbortSignal;
}

/** Options of {@link KvClient.backup}. */
export interface BackupOptions {
  /** Back up every reachable member, not just the node answering. */
  allNodes?: boolean;
  /** Deadline in milliseconds (default: the client's `deadlineMs`). */
  deadlineMs?: number;
  /** Aborting this signal cancels the call. */
  signal?: AbortSignal;
}

/** Options of {@link KvClient.status}. */
export interface StatusOptions {
  /** Deadline in milliseconds (default: the client's `deadlineMs`). */
  deadlineMs?: number;
  /** Aborting this signal cancels the call. */
  signal?: AbortSignal;
}

/** Options of {@link KvClient.verify}. */
export interface VerifyOptions {
  /** Deadline in milliseconds (default 60 000, not the client's `deadlineMs`: every replica of every range is asked). */
  deadlineMs?: number;
  /** Aborting this signal cancels the call. */
  signal?: AbortSignal;
}

/** Options of {@link KvClient.repair}. */
/** A membership change (docs/membership.md); see KvClient.changeMembership. */
export type MembershipChange =
  | { kind: 'mark-dead'; nodeId: string }
  | { kind: 'add'; nodeId: string; peer: string }
  | { kind: 'remove'; nodeId: string }
  | { kind: 'replace'; oldNodeId: string; newNodeId: string; peer: string }
  | { kind: 'cancel' };

/** A committed membership change. */
export interface MembershipChangeResult {
  /** The membership epoch that carries it. */
  epoch: number;
  /** What changed, in words. */
  description: string;
}

export interface ChangeMembershipOptions {
  /** Deadline in milliseconds (default 30 000: every live member must answer). */
  deadlineMs?: number;
  signal?: AbortSignal;
}

export interface RepairOptions {
  /**
   * Deadline in milliseconds (default 600 000, not the client's `deadlineMs`: an exchange that
   * copies many records can take minutes).
   */
  deadlineMs?: number;
  /** Aborting this signal cancels the call (exchanges already under way on the node finish). */
  signal?: AbortSignal;
}

/** The result of {@link KvClient.put}. */
export interface PutResult {
  /** True if a live value existed before this put (on the replicas that acknowledged it). */
  found: boolean;
  /** The value this put replaced, when `found`. */
  oldValue?: Buffer;
}

/** Where a backup was written and what it holds. */
export interface BackupStatus {
  /** Directory holding the copy, on the node that made it. */
  path: string;
  /** Size of the copy in bytes. */
  bytes: number;
  /** Live keys in the copy. */
  keyCount: number;
  /** When the copy was taken. */
  createdAt: Date;
  /** Node the copy belongs to. */
  nodeId: string;
  /** With `allNodes`: one entry per member (the answering node's included); otherwise empty. */
  nodes: BackupStatus[];
  /** With `allNodes`: why this member's backup failed; empty when it did not. */
  error: string;
}

/** One cluster member as seen from the node that answered {@link KvClient.status}. */
export interface MemberStatus {
  /** Member id. */
  nodeId: string;
  /** Peer address (host:port of its internal API). */
  peer: string;
  /** True for the answering node itself. */
  self: boolean;
  /** Whether the answering node's last contact with this member succeeded. */
  reachable: boolean;
  /** Replication log entries waiting to be delivered to this member. */
  backlogEntries: number;
  /** Bytes of those entries. */
  backlogBytes: number;
  /** Age of the oldest waiting entry in milliseconds (0 when the backlog is empty). */
  backlogOldestAgeMs: number;
  /** Last successful contact; absent if there never was one. */
  lastContact?: Date;
  /** Entries dropped from the log towards this member because of hints limits. */
  droppedEntries: number;
  /** Last completed anti-entropy exchange with this member; absent if there never was one. */
  lastExchange?: Date;
  /** Records that exchange copied (both directions). */
  lastExchangeRepaired: number;
  /** Why the last exchange attempt failed; absent if it succeeded (or none was attempted). */
  lastExchangeError?: string;
  /** The member's state in the answering node's membership ('unknown' from a node that predates it). */
  state: MemberState;
  /** The share of the keys it holds a replica of, over the replication factor (the members' shares sum to 1). */
  ownedShare: number;
  /** Declared dead (`kvctl member mark-dead`): still owns ranges, but gets no writes and is not waited for. */
  dead: boolean;
}

/** A member's place in the membership (docs/membership.md). */
export type MemberState = 'joining' | 'normal' | 'leaving' | 'removed' | 'unknown';

/** The answering node's view of itself and the cluster. */
export interface NodeStatus {
  /** This node's configured id. */
  nodeId: string;
  /** Seconds since the node started. */
  uptimeSeconds: number;
  /** Live (non-deleted) records stored on this node. */
  keyCount: number;
  /** Records stored on this node including tombstones. */
  recordCount: number;
  /** Replication factor of the cluster. */
  replicationFactor: number;
  /** Public API address the node listens on. */
  listen: string;
  /** Data directory of the node. */
  dataDir: string;
  /** Server version. */
  version: string;
  /** Every cluster member, the answering node included. */
  members: MemberStatus[];
  /** The membership epoch the answering node runs with (0 from a node that predates it). */
  membershipEpoch: number;
  /** Tombstones the answering node's GC purged since it started. */
  tombstonesPurged: number;
  /** Why its last GC step purged less than it could (a member out of reach, ...); absent if it did not hold back, or without admin. */
  tombstoneGcHeldBack?: string;
  /** The membership change in progress as the answering node sees it; absent when there is none. */
  membershipChange?: string;
  /** Of that change, what the members gaining ranges received, as far as the answering node knows. */
  membershipChangeProgress?: { transfersDone: number; transfersTotal: number; keys: number; bytes: number };
  /**
   * Security problems of the node's setup, one sentence each (a port on a non-loopback address
   * without TLS or without auth); empty when there are none.
   */
  warnings: string[];
  /**
   * True when the caller lacks the admin permission (a node with auth): `dataDir`, the members'
   * `peer` addresses, backlogs and `lastExchangeError` are then empty or 0.
   */
  redacted: boolean;
}

/** One replica's digest of a ring range, in a {@link VerifyReport}. */
export interface ReplicaDigest {
  /** Replica node id. */
  nodeId: string;
  /** Root hash of the replica's hash tree for the range, 16 hex digits; empty if it could not be asked. */
  digest: string;
  /** Records (tombstones included) the replica holds in the range. */
  recordCount: number;
  /** Why the replica could not be asked; absent if it answered. */
  error?: string;
}

/** One ring range and its replicas' digests, in a {@link VerifyReport}. */
export interface RangeVerification {
  /** Ring range index. */
  range: number;
  /** The range covers murmur3(key) in (startExclusive, endInclusive]. */
  startExclusive: number;
  /** End of the hash interval (inclusive). */
  endInclusive: number;
  /** True if every replica answered with the same digest. */
  agree: boolean;
  /** One entry per replica of the range. */
  replicas: ReplicaDigest[];
  /** Members that are not replicas of the range but hold records in it (each makes the range differ). */
  strays: ReplicaDigest[];
}

/** The result of {@link KvClient.verify}: replica agreement over the whole ring. */
export interface VerifyReport {
  /** Every range of the ring, in order. */
  ranges: RangeVerification[];
  /** Ranges whose replicas disagree or could not all be asked (0: the replicas are in sync). */
  differingRanges: number;
}

/** The exchange between the answering node and one peer, in a {@link RepairReport}. */
export interface PeerRepair {
  /** Peer id. */
  nodeId: string;
  /** Ranges compared. */
  rangesCompared: number;
  /** Ranges whose digests differed. */
  rangesDiffering: number;
  /** Records copied from the peer to the answering node. */
  recordsPulled: number;
  /** Records copied from the answering node to the peer. */
  recordsPushed: number;
  /** Protobuf bytes the exchange moved, both directions. */
  bytesTransferred: number;
  /** Wall time of the exchange in milliseconds. */
  durationMs: number;
  /** Why the exchange did not complete; absent if it did. */
  error?: string;
}

/** The result of {@link KvClient.repair}: one anti-entropy round of the answering node. */
export interface RepairReport {
  /** One entry per peer of the answering node (empty for a single-node cluster). */
  peers: PeerRepair[];
}
