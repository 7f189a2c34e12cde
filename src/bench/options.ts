/**
 * The options of one benchmark run: defaults, limits (every one named, with its reason), and the
 * check that turns user input into a complete, valid {@link BenchOptions}.
 */
import type { ConsistencyLevel } from '../client/index.js';
import { checkZipfSkew, distributions, type Distribution, keySpaceMax, zipfSkewDefault, zipfSkewMax, zipfSkewMin } from './key-chooser.js';
import { defaultConnections } from './plan.js';
import { isWorkloadName, opMixOf, readRatioDefault, workloadDefaults, workloadNames, type WorkloadName } from './workload.js';

export const clientKinds = ['sdk', 'sdk-batch', 'sdk-no-coalesce', 'raw', 'etcd'] as const;
/**
 * `sdk`: the KvClient SDK as users get it (deadlines, failover, concurrent calls on a connection
 * coalesced into OperationStream messages); `sdk-batch`: the SDK with `operationStream: false`
 * (coalesced into Batch calls); `sdk-no-coalesce`: the SDK with `coalesce: false` (one RPC per
 * operation); `raw`: bare grpc-js clients with gen/'s codecs, one unary call per operation;
 * `etcd`: the same bare clients calling an etcd v3 cluster's KV service (etcd-calls.ts), the
 * baseline BENCHMARKS.md compares the unary path with.
 */
export type ClientKind = (typeof clientKinds)[number];

/** The kinds that send one unary call per operation on bare grpc-js clients (driver.ts RawDriver). */
export function isRawUnaryClient(kind: ClientKind): boolean {
  return kind === 'raw' || kind === 'etcd';
}

export const workloadDefault: WorkloadName = 'mixed';
export const keysDefault = 100_000;
/** A billion keys: preloading more would take hours; also far inside the 2^32 permutation domain. */
export const keysMax = Math.min(1_000_000_000, keySpaceMax);
export const keyPrefixDefault = 'bench:';
export const valueBytesDefault = 100;
/** 16 MiB: half of the server's hard ceiling (limits.maxValueBytes applies first, default 1 MiB). */
export const valueBytesMax = 16 * 1024 * 1024;
export const concurrencyDefault = 16;
/** Each in-flight operation is a closed loop with its own promise chain; 10k is plenty for 1 process. */
export const concurrencyMax = 10_000;
/** Each is a TCP connection (HTTP/2 session) to a node. */
export const connectionsMax = 1024;
export const threadsDefault = 1;
/** More worker threads than this only adds contention on any machine we run on. */
export const threadsMax = 64;
export const durationSecondsDefault = 10;
/** Hard limit of the measured phase, also of an --ops run: every run is bounded. */
export const durationSecondsMax = 3600;
export const warmupSecondsDefault = 1;
export const warmupSecondsMax = 600;
/** The shared ticket counter is an Int32; a billion operations is hours of load anyway. */
export const opsMax = 1_000_000_000;
/** The SDK's default deadline per call. */
export const timeoutMsDefault = 5000;
export const timeoutMsMax = 600_000;
/** A throwaway cluster on one machine: more nodes than this only measures the scheduler. */
export const localClusterMax = 9;
/** What users run: the SDK with its defaults. */
export const clientDefault: ClientKind = 'sdk';

/** A complete, checked set of options. */
export interface BenchOptions {
  workload: WorkloadName;
  /** Share of gets (mixed only; fixed by the other workloads). */
  readRatio: number;
  /** Share of deletes (mixed only). */
  deleteRatio: number;
  distribution: Distribution;
  zipfSkew: number;
  keys: number;
  keyPrefix: string;
  preload: boolean;
  valueBytes: number;
  concurrency: number;
  /** Total gRPC channels (TCP connections) of the load generator, over all threads and endpoints. */
  connections: number;
  threads: number;
  /** Time limit of the measured phase in seconds. */
  durationSeconds: number;
  /** Stop after this many measured operations (and at durationSeconds at the latest). */
  ops: number | undefined;
  warmupSeconds: number;
  /** Undefined: the node's configured default. */
  consistency: ConsistencyLevel | undefined;
  /** Deadline of each call. */
  timeoutMs: number;
  /** Nodes to load (ignored with localCluster: the cluster's own endpoints are used). */
  endpoints: string[];
  /** Start a throwaway cluster of this many local nodes. */
  localCluster: number | undefined;
  /** Replication factor of the local cluster (default: the node default, min(3, nodes)). */
  replicationFactor: number | undefined;
  /** Server processes whose CPU time to measure (with localCluster: its nodes). */
  serverPids: number[];
  /** Seed of every random choice (keys, operations, the zipfian scatter). */
  seed: number;
  client: ClientKind;
  /** Bearer token sent with every call (kvctl --token / KVSTORE_TOKEN), for nodes with auth. */
  token: string | undefined;
  /** Start the local cluster with auth (a users file with one user) and send that user's token. */
  auth: boolean;
  /**
   * Start the local cluster with TLS on the public port and mutual TLS between nodes (dev
   * certificates made for the run); the load generator then talks TLS.
   */
  tls: boolean;
  /** With --local-cluster: every node runs under `node --cpu-prof`, writing its profile into this directory when it stops. */
  serverCpuProfileDir: string | undefined;
}

/** What a caller may leave out; {@link resolveBenchOptions} fills in the rest. */
export type BenchOptionsInput = Partial<BenchOptions> & { endpoints?: string[] };

/** An invalid option; the message names the command-line flag. */
export class BenchOptionsError extends Error {
  override readonly name = 'BenchOptionsError';
}

function check(condition: boolean, message: string): void {
  if (!condition) throw new BenchOptionsError(message);
}

function checkInteger(flag: string, value: number, min: number, max: number): number {
  check(Number.isSafeInteger(value) && value >= min && value <= max, `${flag} must be an integer from ${min} to ${max}, got ${value}`);
  return value;
}

function checkNumber(flag: string, value: number, min: number, max: number): number {
  check(Number.isFinite(value) && value >= min && value <= max, `${flag} must be a number from ${min} to ${max}, got ${value}`);
  return value;
}

/**
 * Fills in defaults and checks every option.
 *
 * @throws BenchOptionsError naming the flag at fault
 */
export function resolveBenchOptions(input: BenchOptionsInput): BenchOptions {
  const workload = input.workload ?? workloadDefault;
  check(isWorkloadName(workload), `--workload must be one of ${workloadNames.join(', ')}, got "${String(workload)}"`);
  const defaults = workloadDefaults[workload];
  const readRatio = checkNumber('--read-ratio', input.readRatio ?? readRatioDefault, 0, 1);
  const deleteRatio = checkNumber('--delete-ratio', input.deleteRatio ?? 0, 0, 1);
  if (workload === 'mixed') {
    try {
      opMixOf(workload, readRatio, deleteRatio);
    } catch (error) {
      throw new BenchOptionsError(`--read-ratio/--delete-ratio: ${(error as Error).message}`);
    }
  }
  const distribution = input.distribution ?? defaults.distribution;
  check((distributions as readonly string[]).includes(distribution), `--distribution must be one of ${distributions.join(', ')}, got "${String(distribution)}"`);
  const zipfSkew = input.zipfSkew ?? zipfSkewDefault;
  try {
    checkZipfSkew(zipfSkew);
  } catch {
    throw new BenchOptionsError(`--zipf-skew must be from ${zipfSkewMin} to ${zipfSkewMax}, got ${zipfSkew}`);
  }
  const keys = checkInteger('--keys', input.keys ?? keysDefault, 1, keysMax);
  const keyPrefix = input.keyPrefix ?? keyPrefixDefault;
  const valueBytes = checkInteger('--value-bytes', input.valueBytes ?? valueBytesDefault, 0, valueBytesMax);
  const concurrency = checkInteger('--concurrency', input.concurrency ?? concurrencyDefault, 1, concurrencyMax);
  const threads = Math.min(checkInteger('--threads', input.threads ?? threadsDefault, 1, threadsMax), concurrency);
  const localCluster = input.localCluster === undefined ? undefined : checkInteger('--local-cluster', input.localCluster, 1, localClusterMax);
  const replicationFactor = input.replicationFactor === undefined ? undefined : checkInteger('--rf', input.replicationFactor, 1, localClusterMax);
  check(replicationFactor === undefined || localCluster !== undefined, '--rf applies to --local-cluster only (an external cluster has its own replication factor)');
  check(
    replicationFactor === undefined || localCluster === undefined || replicationFactor <= localCluster,
    `--rf ${String(replicationFactor)} is more than the ${String(localCluster)} nodes of --local-cluster`,
  );
  const endpoints = input.endpoints ?? [];
  check(localCluster !== undefined || endpoints.length > 0, 'no endpoints: give --endpoints or --local-cluster');
  const endpointCount = localCluster ?? endpoints.length;
  const client = input.client ?? clientDefault;
  check((clientKinds as readonly string[]).includes(client), `--client must be one of ${clientKinds.join(', ')}, got "${String(client)}"`);
  const connections = checkInteger('--connections', input.connections ?? defaultConnections(concurrency, endpointCount, threads, client === 'sdk' || client === 'sdk-batch'), 1, connectionsMax);
  check(connections >= threads, `--connections (${connections}) must be at least --threads (${threads}): every thread has its own channels`);
  const ops = input.ops === undefined ? undefined : checkInteger('--ops', input.ops, 1, opsMax);
  const durationSeconds = checkNumber('--duration', input.durationSeconds ?? (ops === undefined ? durationSecondsDefault : durationSecondsMax), 0.1, durationSecondsMax);
  const warmupSeconds = checkNumber('--warmup', input.warmupSeconds ?? warmupSecondsDefault, 0, warmupSecondsMax);
  const timeoutMs = checkInteger('--timeout', input.timeoutMs ?? timeoutMsDefault, 1, timeoutMsMax);
  const serverPids = input.serverPids ?? [];
  for (const pid of serverPids) checkInteger('--server-pids', pid, 1, 2 ** 31 - 1);
  const seed = checkInteger('--seed', input.seed ?? Math.floor(Math.random() * 2 ** 31), 0, 2 ** 32 - 1);
  const auth = input.auth ?? false;
  const tls = input.tls ?? false;
  check(!tls || localCluster !== undefined, '--tls applies to --local-cluster only');
  check(input.serverCpuProfileDir === undefined || localCluster !== undefined, '--server-cpu-prof applies to --local-cluster only (profile an external node with node --cpu-prof yourself)');
  check(!auth || localCluster !== undefined, '--auth applies to --local-cluster only (give an external cluster\'s token with --token)');
  check(client !== 'etcd' || localCluster === undefined, '--client etcd loads an etcd cluster: give its client URLs as --endpoints (and its pids as --server-pids), not --local-cluster');
  check(client !== 'etcd' || input.token === undefined, '--client etcd sends no token (etcd authenticates differently)');
  return {
    workload,
    readRatio: workload === 'mixed' ? readRatio : opMixOf(workload).get,
    deleteRatio: workload === 'mixed' ? deleteRatio : opMixOf(workload).delete,
    distribution,
    zipfSkew,
    keys,
    keyPrefix,
    preload: input.preload ?? defaults.preload,
    valueBytes,
    concurrency,
    connections,
    threads,
    durationSeconds,
    ops,
    warmupSeconds,
    consistency: input.consistency,
    timeoutMs,
    endpoints,
    localCluster,
    replicationFactor,
    serverPids,
    seed,
    client,
    token: input.token,
    auth,
    tls,
    serverCpuProfileDir: input.serverCpuProfileDir,
  };
}
