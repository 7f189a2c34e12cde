import type { CallContext } from 'nice-grpc';
import type { Logger } from 'pino';
import type {
  BackupStatus,
  BatchOperation,
  BatchResult,
  DeleteResponse,
  Key,
  KeyValue,
  KVStoreServiceImplementation,
  OldValue,
  RepairResponse,
  ChangeMembershipRequest,
  ChangeMembershipResponse,
  StatusResponse,
  Value,
  VerifyResponse,
} from '../../gen/kvstore/v1/kvstore.js';
import type { ConsistencyLevel } from '../cluster/quorum.js';
import type { Coordinator, ReplicationWake } from '../replication/coordinator.js';
import { type CancelSignal, RequestDeadline } from '../replication/deadline.js';
import { deadlineMetadataKey } from '../common/deadline-header.js';
import { InvalidRequestError, ResourceLimitError } from '../replication/errors.js';
import { sessionOf } from './auth/auth-middleware.js';
import type { AuthSession } from './auth/authenticator.js';
import { checkAdmin, checkKeyPermission, checkListPermission } from './auth/authorizer.js';
import { isDomainError, toServerError } from './error-status.js';
import { batchOperationBytes, type InFlightBudget, operationBytes, resultBytes } from './in-flight-budget.js';
import { RunningOperations } from './running-operations.js';
import { overloadedDetailsPrefix } from '../common/overload.js';
import { lateRequestToleranceMsDefault, LateRequests, LateRequestStats } from './late-requests.js';
import { serveOperationStream, type OperationStreamStats } from './operation-stream.js';
import { checkConsistency, checkKey, checkListRequest, checkValue, type RequestLimits } from './request-checks.js';

/** Most operations one Batch call may carry (documented in kvstore.proto). */
export const batchOperationsMax = 1024;

export interface KvServiceDeps {
  readonly coordinator: Coordinator;
  readonly limits: RequestLimits;
  readonly defaultRead: ConsistencyLevel;
  readonly defaultWrite: ConsistencyLevel;
  /** Server-side cap on a request's duration when the client's deadline is longer or absent. */
  readonly requestMs: number;
  /** Aborted when the node stops: open OperationStreams answer what they read and end. */
  readonly closing: AbortSignal;
  /** What the OperationStreams do, counted for /metrics. */
  readonly streamStats: OperationStreamStats;
  /** The node's budget of request bytes in flight (`limits.maxInFlightBytes`). */
  readonly budget: InFlightBudget;
  /** The node's slots for Batch and OperationStream operations running at once; default: a private one. */
  readonly running?: RunningOperations;
  /** Logs an operation of a Batch that failed with a bug (the middleware does this for whole calls). */
  readonly logger: Logger;
  /**
   * How long after its client's absolute deadline (metadata `kvstore-deadline-unix-ms`, or a
   * stream operation's `deadline_unix_ms`) a request may be read and still run: the node's
   * `clock.maxDriftMs`, as below it clock skew and delay look the same (late-requests.ts).
   * Default {@link lateRequestToleranceMsDefault}.
   */
  readonly lateRequestToleranceMs?: number;
  /** Counts the late requests refused, for /metrics (`lateRequestsRefused`); default: a private one. */
  readonly lateRequestStats?: LateRequestStats;
  /** The node's wall clock (Unix ms) the late-request check reads; default Date.now. */
  readonly wallClock?: () => number;
  /**
   * Told of every Batch and OperationStream operation answered (for metrics): which RPC, which
   * operation, its status code (0 OK) and the seconds from its being read to its result.
   */
  readonly observeOperation?: (rpc: 'Batch' | 'OperationStream', operation: OperationKind, code: number, seconds: number) => void;
  status(): StatusResponse;
  backup(allNodes: boolean): Promise<BackupStatus>;
  verify(): Promise<VerifyResponse>;
  repair(): Promise<RepairResponse>;
  /** Carries out a membership change once every live member agreed (node.ts). */
  changeMembership(request: ChangeMembershipRequest): Promise<ChangeMembershipResponse>;
}

const emptyValue = Buffer.alloc(0);

/** What a unary Put, Get or Delete needs of its call, whichever server layer read it. */
export interface UnaryCallInfo {
  /** The value of metadata `kvstore-deadline-unix-ms` (late-requests.ts), undefined when absent. */
  readonly deadlineHeader: unknown;
  /** Aborted when the client cancels or the call's gRPC deadline passes. */
  readonly signal: CancelSignal;
  /** The caller when the node runs with auth, else undefined (nothing is checked). */
  readonly session: AuthSession | undefined;
}

/** The unary Put, Get and Delete of the public service, from decoded request to answer; they throw domain errors. */
export interface KvUnaryOperations {
  put(request: KeyValue, call: UnaryCallInfo): Promise<OldValue>;
  get(request: Key, call: UnaryCallInfo): Promise<Value>;
  delete(request: Key, call: UnaryCallInfo): Promise<DeleteResponse>;
}

/**
 * The public KVStore service: each handler checks its request, calls the coordinator and shapes
 * the answer. Errors are mapped to status codes by the error middleware (error-middleware.ts).
 */
export function createKvService(deps: KvServiceDeps): { service: KVStoreServiceImplementation; unary: KvUnaryOperations } {
  const { coordinator, limits, budget } = deps;
  const running = deps.running ?? new RunningOperations();
  const lateRequests = new LateRequests(deps.lateRequestToleranceMs ?? lateRequestToleranceMsDefault, deps.lateRequestStats ?? new LateRequestStats(), deps.wallClock);
  /**
   * Runs `handle` with the call's deadline, charging `bytes` to the budget (or refusing the call
   * with RESOURCE_EXHAUSTED before anything runs), and stops the timer when the call is answered.
   * A call read long after its client's deadline is refused first (DEADLINE_EXCEEDED, nothing run).
   */
  const withDeadline = async <T>(call: UnaryCallInfo, bytes: number, handle: (deadline: RequestDeadline) => Promise<T>): Promise<T> => {
    lateRequests.checkDeadlineHeader(call.deadlineHeader);
    budget.tryAcquire(bytes);
    const deadline = new RequestDeadline(call.signal, deps.requestMs);
    try {
      return await handle(deadline);
    } finally {
      deadline.disarm();
      budget.release(bytes);
    }
  };
  const callInfo = (context: CallContext): UnaryCallInfo => ({ deadlineHeader: context.metadata.get(deadlineMetadataKey), signal: context.signal, session: sessionOf(context) });

  // `session`: the caller when the node runs with auth (auth-middleware.ts), else undefined and
  // nothing is checked. Each operation is checked where its key is known, so in a Batch or on an
  // OperationStream a denied operation fails alone (PERMISSION_DENIED) and the others run.
  // `wake`: a unary call's write wakes replication after the turn, with the other calls that
  // arrived in it; the operations of a Batch or OperationStream message are already together.
  const put = async (request: KeyValue, deadline: RequestDeadline, session: AuthSession | undefined, wake: ReplicationWake = 'now'): Promise<OldValue> => {
    const key = checkKey(request.key, limits);
    if (session !== undefined) checkKeyPermission(session.user(), 'write', key);
    const value = checkValue(request.value, limits);
    const level = checkConsistency(request.consistency, deps.defaultWrite);
    const old = await coordinator.write(key, value, false, level, deadline, wake);
    return { found: old.found, value: old.value ?? emptyValue };
  };
  const get = async (request: Key, deadline: RequestDeadline, session: AuthSession | undefined): Promise<Value> => {
    const key = checkKey(request.key, limits);
    if (session !== undefined) checkKeyPermission(session.user(), 'read', key);
    const level = checkConsistency(request.consistency, deps.defaultRead);
    const result = await coordinator.read(key, level, deadline);
    return { found: result.found, value: result.value ?? emptyValue };
  };
  const del = async (request: Key, deadline: RequestDeadline, session: AuthSession | undefined, wake: ReplicationWake = 'now'): Promise<DeleteResponse> => {
    const key = checkKey(request.key, limits);
    if (session !== undefined) checkKeyPermission(session.user(), 'write', key);
    const level = checkConsistency(request.consistency, deps.defaultWrite);
    const old = await coordinator.write(key, emptyValue, true, level, deadline, wake);
    return { found: old.found };
  };
  /** One Batch or OperationStream operation; its failure becomes its result, never the call's. */
  const runOperation = async (op: BatchOperation, deadline: RequestDeadline, session: AuthSession | undefined): Promise<BatchResult> => {
    try {
      // Decoders keep the last of several oneof fields; a hand-built message may set more.
      if (Number(op.put !== undefined) + Number(op.get !== undefined) + Number(op.delete !== undefined) > 1) {
        throw new InvalidRequestError('batch operation sets more than one of put, get, delete: send one per operation');
      }
      if (op.put !== undefined) return { put: await put(op.put, deadline, session) };
      if (op.get !== undefined) return { get: await get(op.get, deadline, session) };
      if (op.delete !== undefined) return { delete: await del(op.delete, deadline, session) };
      throw new InvalidRequestError('batch operation has none of put, get, delete set');
    } catch (err) {
      if (!isDomainError(err)) deps.logger.error({ err, method: 'Batch' }, 'batch operation failed with an unexpected error');
      const status = toServerError(err);
      return { error: { code: status.code, message: status.details } };
    }
  };

  /** `result`, reported to observeOperation when it settles (timed from now: slot waits included). */
  const observe = deps.observeOperation;
  const observed = observe === undefined
    ? (_rpc: 'Batch' | 'OperationStream', _op: BatchOperation, result: Promise<BatchResult>) => result
    : (rpc: 'Batch' | 'OperationStream', op: BatchOperation, result: Promise<BatchResult>): Promise<BatchResult> => {
        const startedMs = performance.now();
        return result.then((r) => {
          observe(rpc, operationKind(op), r.error?.code ?? 0, (performance.now() - startedMs) / 1000);
          return r;
        });
      };

  // The public server answers these three on grpc-js directly (direct-unary.ts); the service
  // below answers them through nice-grpc with the same functions (a server built without the
  // direct path, and the tests that call the service).
  const unary: KvUnaryOperations = {
    put: (request, call) => withDeadline(call, operationBytes(request.key.length, request.value.length), (deadline) => put(request, deadline, call.session, 'after-turn')),
    get: (request, call) => withDeadline(call, operationBytes(request.key.length, 0), (deadline) => get(request, deadline, call.session)),
    delete: (request, call) => withDeadline(call, operationBytes(request.key.length, 0), (deadline) => del(request, deadline, call.session, 'after-turn')),
  };

  const service: KVStoreServiceImplementation = {
    async put(request, context) {
      return unary.put(request, callInfo(context));
    },
    async get(request, context) {
      return unary.get(request, callInfo(context));
    },
    async delete(request, context) {
      return unary.delete(request, callInfo(context));
    },
    async batch(request, context) {
      const count = request.operations.length;
      if (count > batchOperationsMax) {
        throw new ResourceLimitError(`batch has ${count} operations, over the limit of ${batchOperationsMax}: split it`);
      }
      const bytes = request.operations.reduce((sum, op) => sum + batchOperationBytes(op), 0);
      const session = sessionOf(context);
      return withDeadline(callInfo(context), bytes, async (deadline) => {
        // Each answer counts against the budget from when it is known until the call returns
        // (in-flight-budget.ts); an operation that finds the budget full is not run, so a Batch
        // of large answers gets some and RESOURCE_EXHAUSTED for the rest, not all in memory.
        let answerBytes = 0;
        try {
          const results = await Promise.all(
            request.operations.map((op) =>
              observed('Batch', op, running.run(async (): Promise<BatchResult> => {
                if (!budget.hasRoomBeside(bytes)) return { error: { code: resourceExhaustedCode, message: notRunMessage(budget) } };
                const result = await runOperation(op, deadline, session);
                const resultSize = resultBytes(result);
                budget.charge(resultSize);
                answerBytes += resultSize;
                return result;
              })),
            ),
          );
          return { results };
        } finally {
          budget.release(answerBytes);
        }
      });
    },
    async *operationStream(requests, context) {
      const session = sessionOf(context);
      yield* serveOperationStream(requests, context.signal, {
        runOperation: (op, deadline) => observed('OperationStream', op, running.run(() => runOperation(op, deadline, session))),
        requestMs: deps.requestMs,
        closing: deps.closing,
        budget,
        stats: deps.streamStats,
        lateRequests,
      });
    },
    async *listKeys(request, context) {
      const { prefix, startAfter } = checkListRequest(request.prefix, request.startAfter, limits);
      const session = sessionOf(context);
      if (session !== undefined) checkListPermission(session.user(), prefix);
      for await (const keys of coordinator.listKeys(prefix, startAfter, request.limit, context.signal)) {
        yield { keys };
      }
    },
    async backup(request, context) {
      requireAdmin(context, 'Backup');
      return deps.backup(request.allNodes);
    },
    async status(_request, context) {
      const session = sessionOf(context);
      const status = deps.status();
      return session === undefined || session.user().admin ? status : redactStatus(status);
    },
    async verify(_request, context) {
      requireAdmin(context, 'Verify');
      return deps.verify();
    },
    async repair(_request, context) {
      requireAdmin(context, 'Repair');
      return deps.repair();
    },
    async changeMembership(request, context) {
      requireAdmin(context, 'ChangeMembership');
      return deps.changeMembership(request);
    },
  };
  return { service, unary };
}

/** Kinds of a Batch or OperationStream operation (the `operation` label of kvstore_operation_duration_seconds). */
export type OperationKind = 'put' | 'get' | 'delete' | 'invalid';

function operationKind(op: BatchOperation): OperationKind {
  const set = Number(op.put !== undefined) + Number(op.get !== undefined) + Number(op.delete !== undefined);
  if (set !== 1) return 'invalid';
  return op.put !== undefined ? 'put' : op.get !== undefined ? 'get' : 'delete';
}

/** google.rpc.Code RESOURCE_EXHAUSTED. */
const resourceExhaustedCode = 8;

function notRunMessage(budget: InFlightBudget): string {
  return `${overloadedDetailsPrefix} not run: answers and requests in flight hold ${budget.inFlightBytes} bytes (limits.maxInFlightBytes = ${budget.maxBytes}); nothing was applied, send this operation again (in a smaller Batch if its answers are large)`;
}

/** Throws PERMISSION_DENIED unless the node runs without auth or the caller has admin. */
function requireAdmin(context: CallContext, what: string): void {
  const session = sessionOf(context);
  if (session !== undefined) checkAdmin(session.user(), what);
}

/**
 * Status for a caller without admin: what the cluster looks like (ids, counts, reachability),
 * not where it lives (data dir, peer addresses) nor its replication backlogs.
 */
export function redactStatus(status: StatusResponse): StatusResponse {
  return {
    ...status,
    dataDir: '',
    tombstoneGcHeldBack: '',
    // Its text names peer addresses.
    membershipChange: status.membershipChange === '' ? '' : 'a membership change is in progress (details need admin)',
    redacted: true,
    members: status.members.map((m) => ({ ...m, peer: '', backlogEntries: 0n, backlogBytes: 0n, backlogOldestAgeMs: 0n, droppedEntries: 0n, lastExchangeError: '' })),
  };
}
