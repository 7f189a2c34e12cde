import type { CallContext } from 'nice-grpc';
import type { BackupStatus, KVStoreServiceImplementation, RepairResponse, StatusResponse, VerifyResponse } from '../../gen/kvstore/v1/kvstore.js';
import type { ConsistencyLevel } from '../cluster/quorum.js';
import type { Coordinator } from '../replication/coordinator.js';
import type { RequestDeadline } from '../replication/deadline.js';
import { checkConsistency, checkKey, checkListRequest, checkValue, type RequestLimits } from './request-checks.js';

export interface KvServiceDeps {
  readonly coordinator: Coordinator;
  readonly limits: RequestLimits;
  readonly defaultRead: ConsistencyLevel;
  readonly defaultWrite: ConsistencyLevel;
  /** Server-side cap on a request's duration when the client's deadline is longer or absent. */
  readonly requestMs: number;
  status(): StatusResponse;
  backup(allNodes: boolean): Promise<BackupStatus>;
  verify(): Promise<VerifyResponse>;
  repair(): Promise<RepairResponse>;
}

const emptyValue = Buffer.alloc(0);

/**
 * The public KVStore service: each handler checks its request, calls the coordinator and shapes
 * the answer. Errors are mapped to status codes by the error middleware (error-middleware.ts).
 */
export function createKvService(deps: KvServiceDeps): KVStoreServiceImplementation {
  const { coordinator, limits } = deps;
  const requestDeadline = (context: CallContext): RequestDeadline => ({ signal: context.signal, timeoutMs: deps.requestMs });
  return {
    async put(request, context) {
      const key = checkKey(request.key, limits);
      const value = checkValue(request.value, limits);
      const level = checkConsistency(request.consistency, deps.defaultWrite);
      const old = await coordinator.write(key, value, false, level, requestDeadline(context));
      return { found: old.found, value: old.value ?? emptyValue };
    },
    async get(request, context) {
      const key = checkKey(request.key, limits);
      const level = checkConsistency(request.consistency, deps.defaultRead);
      const result = await coordinator.read(key, level, requestDeadline(context));
      return { found: result.found, value: result.value ?? emptyValue };
    },
    async delete(request, context) {
      const key = checkKey(request.key, limits);
      const level = checkConsistency(request.consistency, deps.defaultWrite);
      const old = await coordinator.write(key, emptyValue, true, level, requestDeadline(context));
      return { found: old.found };
    },
    async *listKeys(request, context) {
      const { prefix, startAfter } = checkListRequest(request.prefix, request.startAfter, limits);
      for await (const keys of coordinator.listKeys(prefix, startAfter, request.limit, context.signal)) {
        yield { keys };
      }
    },
    async backup(request) {
      return deps.backup(request.allNodes);
    },
    async status() {
      return deps.status();
    },
    async verify() {
      return deps.verify();
    },
    async repair() {
      return deps.repair();
    },
  };
}
