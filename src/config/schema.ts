import { z } from 'zod';

/**
 * The node configuration (node.yaml). This is the only place config is parsed; everything else
 * receives a validated `NodeConfig`. Objects are strict: an unknown key is an error, so a typo
 * never silently falls back to a default.
 */

/** Default public API address of `npm start` with no config. */
export const listenDefault = '127.0.0.1:50051';
/** Default internal (peer) API address. */
export const peerListenDefault = '127.0.0.1:50052';
export const dataDirDefault = './data';
/** Default key size limit: 1 KiB, like most Dynamo-style stores. */
export const keyBytesMaxDefault = 1024;
/** Default value size limit: 1 MiB, well inside gRPC's 4 MiB message default. */
export const valueBytesMaxDefault = 1024 * 1024;
/** LMDB (as built by lmdb-js) refuses keys over 1978 bytes; the hash index prefixes 4 bytes. */
export const lmdbKeyBytesMax = 1974;
/** Hard ceiling for limits.maxValueBytes: values travel in one gRPC message. */
export const valueBytesMaxCeiling = 32 * 1024 * 1024;
/**
 * Default budget of request bytes a node works on at once (src/server/in-flight-budget.ts):
 * room for 128 1 MiB writes, far above what a 128-client benchmark of 100-byte values holds
 * (128 operations of ~380 charged bytes each, about 48 KiB). Under a burst of 1,024 concurrent
 * 1 MiB puts a node with it peaked at 1.1 GB, against 2.4 GB without it (BENCHMARKS.md).
 */
export const inFlightBytesMaxDefault = 128 * 1024 * 1024;
/**
 * Shortest tombstones.graceSeconds: the grace also bounds how late a replication-log entry or a
 * read repair may arrive and still be applied (tombstone-gc.ts), so it must exceed any pause,
 * partition retry or clock skew the cluster should ride out; 10 s is for tests, days for production.
 */
export const graceSecondsMin = 10;

/** membership.deadAfterSeconds by default (docs/membership.md §2.5). */
export const membershipDeadAfterSecondsDefault = 30;

/** Backups of a node kept by default: a week of daily backups. */
export const backupKeepDefault = 7;
/**
 * Calls one connection may have open at once: far above the SDK's needs (one OperationStream
 * and its unary calls) and a 128-client benchmark's, low enough that one connection cannot open
 * an unbounded number of streams, each with its buffers.
 */
export const connectionStreamsMaxDefault = 1024;
/** A connection with no call for 5 minutes is closed: idle clients do not hold descriptors for ever. */
export const connectionIdleMsDefault = 5 * 60_000;
/** The node pings every connection each minute and closes one that has not answered in 20 s (a client gone without closing). */
export const keepaliveTimeMsDefault = 60_000;
export const keepaliveTimeoutMsDefault = 20_000;

const nodeIdSchema = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'must be 1-64 characters of A-Z a-z 0-9 . _ - starting with a letter or digit');

const hostPortSchema = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'must be host:port, e.g. 127.0.0.1:50051')
  .refine((s) => Number(s.slice(s.lastIndexOf(':') + 1)) <= 65535, 'port must be 0-65535');

const consistencySchema = z.enum(['one', 'quorum', 'all']);

const memberSchema = z.strictObject({
  /** The member's nodeId. */
  id: nodeIdSchema,
  /** host:port of the member's peerListen address. */
  peer: hostPortSchema,
});

/** A file path (relative to the working directory, like every path in the config). */
const filePathSchema = z.string().min(1);

/** TLS on the public API (src/server/tls-credentials.ts): with it set the port speaks only TLS. */
const tlsSchema = z.strictObject({
  /** PEM certificate chain the node presents to clients. */
  certFile: filePathSchema,
  /** PEM private key of certFile. */
  keyFile: filePathSchema,
  /** PEM CA bundle; when set, clients must present a certificate signed by it. */
  clientCaFile: filePathSchema.optional(),
});

/**
 * Mutual TLS on the peer port and on this node's calls to peers. Each node's certificate names its
 * member id as the SAN URI kvstore://node/<id>; peers accept only certificates signed by caFile.
 */
const peerTlsSchema = z.strictObject({
  certFile: filePathSchema,
  keyFile: filePathSchema,
  caFile: filePathSchema,
});

const positiveInt = z.number().int().positive();
const nonNegativeInt = z.number().int().nonnegative();

export const nodeConfigSchema = z
  .strictObject({
    nodeId: nodeIdSchema.default('node1'),
    listen: hostPortSchema.default(listenDefault),
    peerListen: hostPortSchema.default(peerListenDefault),
    /** host:port of the Prometheus endpoint (`GET /metrics` over HTTP); unset: no endpoint. */
    metricsListen: hostPortSchema.optional(),
    /** TLS on `listen`; unset: plaintext. */
    tls: tlsSchema.optional(),
    /** Mutual TLS between nodes on `peerListen`; unset: plaintext, callers trusted by from_node_id. */
    peerTls: peerTlsSchema.optional(),
    /**
     * Authentication and roles on the public API (src/server/auth/). Unset: no authentication,
     * every caller may do everything (the default, for a node on loopback only).
     */
    auth: z
      .strictObject({
        /** YAML file of roles and users (users-file.ts); re-read on SIGHUP. */
        usersFile: z.string().min(1),
        /**
         * `token`: GET /metrics needs `authorization: Bearer <token>` of a user with a role that
         * has `metrics: true` or `admin: true`; `open`: /metrics needs nothing (bind it privately).
         */
        metrics: z.enum(['token', 'open']).default('token'),
      })
      .optional(),
    dataDir: z.string().min(1).default(dataDirDefault),
    /**
     * Where Backup writes; defaults to `<dataDir>-backups`, beside the data dir and never inside
     * it, so wiping a data dir (the fix for a broken disk or a stale node) keeps its backups.
     */
    backupDir: z.string().min(1).optional(),
    /** This node's newest backups kept in backupDir after each backup (older ones are deleted); 0 keeps all. */
    backupKeep: nonNegativeInt.default(backupKeepDefault),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    cluster: z
      .strictObject({
        /** Replicas per key; defaults to min(3, number of members). */
        replicationFactor: positiveInt.optional(),
        /** Every member including this node; empty means a single-node cluster of this node. */
        members: z.array(memberSchema).default([]),
        /**
         * A new node joining a running cluster: peer addresses (host:port) of any of its members,
         * instead of `members`. The node serves nothing until an operator adds it
         * (`kvctl member add <nodeId> <its peer host:port>`); replicationFactor must be given and
         * equal the cluster's.
         */
        join: z.array(hostPortSchema).default([]),
        /** Virtual nodes per member on the hash ring. */
        vnodesPerMember: positiveInt.max(4096).default(128),
      })
      .default({ members: [], join: [], vnodesPerMember: 128 }),
    consistency: z
      .strictObject({
        read: consistencySchema.default('quorum'),
        write: consistencySchema.default('quorum'),
      })
      .default({ read: 'quorum', write: 'quorum' }),
    limits: z
      .strictObject({
        maxKeyBytes: positiveInt.max(lmdbKeyBytesMax).default(keyBytesMaxDefault),
        maxValueBytes: positiveInt.max(valueBytesMaxCeiling).default(valueBytesMaxDefault),
        /** Bytes of keys and values in flight on the node (see in-flight-budget.ts). */
        maxInFlightBytes: positiveInt.default(inFlightBytesMaxDefault),
      })
      .default({ maxKeyBytes: keyBytesMaxDefault, maxValueBytes: valueBytesMaxDefault, maxInFlightBytes: inFlightBytesMaxDefault }),
    /** Per-connection limits on both ports (src/server/connection-limits.ts). */
    connections: z
      .strictObject({
        /** Most calls open at once on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS). */
        maxConcurrentStreams: positiveInt.default(connectionStreamsMaxDefault),
        /** A connection with no call open for this long is closed (the client reconnects when it needs to). */
        idleTimeoutMs: positiveInt.default(connectionIdleMsDefault),
        /** The node pings each connection this often; one that does not answer within keepaliveTimeoutMs is closed. */
        keepaliveTimeMs: positiveInt.default(keepaliveTimeMsDefault),
        keepaliveTimeoutMs: positiveInt.default(keepaliveTimeoutMsDefault),
      })
      .default({ maxConcurrentStreams: connectionStreamsMaxDefault, idleTimeoutMs: connectionIdleMsDefault, keepaliveTimeMs: keepaliveTimeMsDefault, keepaliveTimeoutMs: keepaliveTimeoutMsDefault }),
    timeouts: z
      .strictObject({
        /** Server-side cap on a client request when the client set no shorter deadline. */
        requestMs: positiveInt.default(10_000),
        /** Deadline of one node-to-node call. */
        peerCallMs: positiveInt.default(5_000),
        /**
         * A client operation read this long after its client's deadline (SDK metadata) is refused
         * unapplied; below it a node cannot tell clock skew between client and node from delay.
         */
        lateRequestToleranceMs: positiveInt.default(60_000),
      })
      .default({ requestMs: 10_000, peerCallMs: 5_000, lateRequestToleranceMs: 60_000 }),
    replication: z
      .strictObject({
        /** Most log entries sent to a peer in one Replicate call. */
        batchMaxEntries: positiveInt.max(100_000).default(1024),
        /** Most bytes of records sent to a peer in one Replicate call. */
        batchMaxBytes: positiveInt.max(48 * 1024 * 1024).default(8 * 1024 * 1024),
        /** First retry delay towards an unreachable peer. */
        retryMinMs: positiveInt.default(50),
        /** Cap of the exponential, jittered retry delay. */
        retryMaxMs: positiveInt.default(2_000),
        /** Liveness probe interval towards peers with no other traffic. */
        probeIntervalMs: positiveInt.default(1_000),
      })
      .default({ batchMaxEntries: 1024, batchMaxBytes: 8 * 1024 * 1024, retryMinMs: 50, retryMaxMs: 2_000, probeIntervalMs: 1_000 }),
    hints: z
      .strictObject({
        /** Log entries older than this are dropped (0: no age limit); anti-entropy repairs the gap. */
        maxAgeSeconds: nonNegativeInt.default(0),
        /** Log bytes per peer beyond which the oldest entries are dropped (0: no limit). */
        maxBytesPerPeer: nonNegativeInt.default(0),
      })
      .default({ maxAgeSeconds: 0, maxBytesPerPeer: 0 }),
    antiEntropy: z
      .strictObject({
        /** Seconds between background exchanges with each peer; 0 turns them off. */
        intervalSeconds: nonNegativeInt.default(60),
        /** Most records per second an exchange sends or applies. */
        maxRecordsPerSecond: positiveInt.default(20_000),
      })
      .default({ intervalSeconds: 60, maxRecordsPerSecond: 20_000 }),
    tombstones: z
      .strictObject({
        /** Tombstones older than this, acknowledged by every replica, are purged. */
        graceSeconds: positiveInt.min(graceSecondsMin, `must be at least ${graceSecondsMin} s: it bounds how late a replicated write may still be applied`).default(86_400),
      })
      .default({ graceSeconds: 86_400 }),
    /** Streaming ranges to their new owners during a membership change (docs/membership.md §5). */
    streaming: z
      .strictObject({
        /** Bytes per second this node receives (and, as a source, sends) over all ranges; 0 = unlimited. */
        maxBytesPerSecond: z.number().int().min(0).default(32 * 1024 * 1024),
        /** Most bytes of records in one page; pages share the group commit with client writes. */
        batchMaxBytes: positiveInt.max(4 * 1024 * 1024).default(1024 * 1024),
        /** Ranges pulled at once. */
        rangesInFlight: positiveInt.max(64).default(4),
        /** How long a range's primary source fails before its other replicas stream it too. */
        sourceFailoverSeconds: positiveInt.default(10),
      })
      .default({ maxBytesPerSecond: 32 * 1024 * 1024, batchMaxBytes: 1024 * 1024, rangesInFlight: 4, sourceFailoverSeconds: 10 }),
    membership: z
      .strictObject({
        /**
         * `kvctl member mark-dead X` is refused by a member that reached X this recently: a
         * declaration of death must not race a node that is only slow or briefly cut off.
         */
        deadAfterSeconds: positiveInt.default(membershipDeadAfterSecondsDefault),
      })
      .default({ deadAfterSeconds: membershipDeadAfterSecondsDefault }),
    clock: z
      .strictObject({
        /** How far ahead of the local wall clock a peer's version may pull this node's HLC. */
        maxDriftMs: positiveInt.default(60_000),
      })
      .default({ maxDriftMs: 60_000 }),
  })
  .superRefine((cfg, ctx) => {
    const members = cfg.cluster.members;
    if (members.length > 0) {
      const ids = new Set<string>();
      members.forEach((m, i) => {
        if (ids.has(m.id)) ctx.addIssue({ code: 'custom', path: ['cluster', 'members', i, 'id'], message: `duplicate member id "${m.id}"` });
        ids.add(m.id);
      });
      if (!ids.has(cfg.nodeId)) {
        ctx.addIssue({ code: 'custom', path: ['cluster', 'members'], message: `must include this node (nodeId "${cfg.nodeId}")` });
      }
    }
    if (cfg.cluster.join.length > 0) {
      if (members.length > 0) ctx.addIssue({ code: 'custom', path: ['cluster', 'join'], message: 'give either members (a new cluster) or join (a node joining a running one), not both' });
      if (cfg.cluster.replicationFactor === undefined) ctx.addIssue({ code: 'custom', path: ['cluster', 'replicationFactor'], message: "is required with join: give the cluster's replication factor" });
      return;
    }
    const memberCount = Math.max(1, members.length);
    const rf = cfg.cluster.replicationFactor;
    if (rf !== undefined && rf > memberCount) {
      ctx.addIssue({ code: 'custom', path: ['cluster', 'replicationFactor'], message: `is ${rf} but the cluster has only ${memberCount} member(s)` });
    }
  });

export type NodeConfigInput = z.input<typeof nodeConfigSchema>;
type ParsedConfig = z.output<typeof nodeConfigSchema>;

/** A validated config with every default filled in. */
export interface NodeConfig extends Omit<ParsedConfig, 'backupDir' | 'cluster'> {
  backupDir: string;
  cluster: ParsedConfig['cluster'] & { replicationFactor: number };
}

export type ConsistencySetting = z.infer<typeof consistencySchema>;
