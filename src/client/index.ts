/**
 * kvstore SDK: `import { KvClient, KvError, Status } from 'kvstore'`.
 *
 * @example
 * ```ts
 * import { KvClient } from 'kvstore';
 *
 * const client = KvClient.connect('127.0.0.1:50051,127.0.0.1:50052');
 * await client.put('k', 'v');
 * console.log(await client.getString('k'));
 * client.close();
 * ```
 *
 * @packageDocumentation
 */
export {
  KvClient,
  attemptsMax,
  channelsPerEndpointMax,
  connectTimeoutMsDefault,
  deadlineMsDefault,
  repairDeadlineMsDefault,
  verifyDeadlineMsDefault,
} from './kv-client.js';
export { KvError, statusName, type KvErrorOptions } from './errors.js';
export { parseEndpoints } from './convert.js';
export {
  consistencyLevels,
  type BackupOptions,
  type BackupStatus,
  type Bytes,
  type ConsistencyLevel,
  type KvCallOptions,
  type KvClientOptions,
  type KvTlsOptions,
  type LoadBalancing,
  type ListKeysOptions,
  type MemberState,
  type MemberStatus,
  type NodeStatus,
  type PeerRepair,
  type PutResult,
  type RangeVerification,
  type RepairOptions,
  type MembershipChange,
  type MembershipChangeResult,
  type ChangeMembershipOptions,
  type RepairReport,
  type ReplicaDigest,
  type StatusOptions,
  type VerifyOptions,
  type VerifyReport,
} from './types.js';
export { Status } from 'nice-grpc';
