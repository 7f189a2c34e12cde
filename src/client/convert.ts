/**
 * Pure conversions between the SDK's plain types and the generated protobuf messages.
 */
import {
  Consistency,
  type BackupStatus as BackupStatusMessage,
  type ChangeMembershipRequest,
  type MemberState as MemberStateMessage,
  memberStateToJSON,
  type MemberStatus as MemberStatusMessage,
  type PeerRepair as PeerRepairMessage,
  type RangeVerification as RangeVerificationMessage,
  type RepairResponse,
  type ReplicaDigest as ReplicaDigestMessage,
  type StatusResponse,
  type VerifyResponse,
} from '../../gen/kvstore/v1/kvstore.js';
import type {
  BackupStatus,
  Bytes,
  ConsistencyLevel,
  MemberState,
  MemberStatus,
  MembershipChange,
  NodeStatus,
  PeerRepair,
  RangeVerification,
  RepairReport,
  ReplicaDigest,
  VerifyReport,
} from './types.js';

/** A string as UTF-8 bytes; bytes as a Buffer over the same memory (no copy). */
export function toBuffer(bytes: Bytes): Buffer {
  if (typeof bytes === 'string') return Buffer.from(bytes, 'utf8');
  if (Buffer.isBuffer(bytes)) return bytes;
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** True for the types the SDK accepts as keys and values. */
export function isBytes(value: unknown): value is Bytes {
  return typeof value === 'string' || value instanceof Uint8Array;
}

const consistencyByLevel: Record<ConsistencyLevel, Consistency> = {
  one: Consistency.CONSISTENCY_ONE,
  quorum: Consistency.CONSISTENCY_QUORUM,
  all: Consistency.CONSISTENCY_ALL,
};

/** True if `value` names a consistency level. */
export function isConsistencyLevel(value: unknown): value is ConsistencyLevel {
  return typeof value === 'string' && Object.hasOwn(consistencyByLevel, value);
}

/** The protobuf enum value of a level; `undefined` asks for the node's default. */
export function toConsistency(level: ConsistencyLevel | undefined): Consistency {
  return level === undefined ? Consistency.CONSISTENCY_UNSPECIFIED : consistencyByLevel[level];
}

/** A 64-bit counter as a number (exact below 2^53, which no count or size reaches). */
export function toNumber(value: bigint): number {
  return Number(value);
}

/** Unix epoch milliseconds as a Date; `undefined` for 0 ("never"). */
export function toOptionalDate(unixMs: bigint): Date | undefined {
  return unixMs === 0n ? undefined : new Date(Number(unixMs));
}

/** A BackupStatus message as a plain object. */
export function fromBackupStatus(message: BackupStatusMessage): BackupStatus {
  return {
    path: message.path,
    bytes: toNumber(message.bytes),
    keyCount: toNumber(message.keyCount),
    createdAt: new Date(Number(message.createdAtUnixMs)),
    nodeId: message.nodeId,
    nodes: message.nodes.map(fromBackupStatus),
    error: message.error,
  };
}

/** A MemberStatus message as a plain object. */
export function fromMemberStatus(message: MemberStatusMessage): MemberStatus {
  const member: MemberStatus = {
    nodeId: message.nodeId,
    peer: message.peer,
    self: message.self,
    reachable: message.reachable,
    backlogEntries: toNumber(message.backlogEntries),
    backlogBytes: toNumber(message.backlogBytes),
    backlogOldestAgeMs: toNumber(message.backlogOldestAgeMs),
    droppedEntries: toNumber(message.droppedEntries),
    lastExchangeRepaired: toNumber(message.lastExchangeRepaired),
    state: memberStateOf(message.state),
    ownedShare: message.ownedShare,
    dead: message.dead,
  };
  const lastContact = toOptionalDate(message.lastContactUnixMs);
  if (lastContact !== undefined) member.lastContact = lastContact;
  const lastExchange = toOptionalDate(message.lastExchangeUnixMs);
  if (lastExchange !== undefined) member.lastExchange = lastExchange;
  if (message.lastExchangeError !== '') member.lastExchangeError = message.lastExchangeError;
  return member;
}

/** MEMBER_STATE_NORMAL -> 'normal'; unspecified or a state this client does not know -> 'unknown'. */
function memberStateOf(state: MemberStateMessage): MemberState {
  const name = memberStateToJSON(state).replace(/^MEMBER_STATE_/, '').toLowerCase();
  return name === 'joining' || name === 'normal' || name === 'leaving' || name === 'removed' ? name : 'unknown';
}

/** A StatusResponse message as a plain object. */
export function fromStatusResponse(message: StatusResponse): NodeStatus {
  return {
    nodeId: message.nodeId,
    uptimeSeconds: message.uptimeSeconds,
    keyCount: toNumber(message.keyCount),
    recordCount: toNumber(message.recordCount),
    replicationFactor: message.replicationFactor,
    listen: message.listen,
    dataDir: message.dataDir,
    version: message.version,
    members: message.members.map(fromMemberStatus),
    membershipEpoch: toNumber(message.membershipEpoch),
    tombstonesPurged: toNumber(message.tombstonesPurged),
    ...(message.tombstoneGcHeldBack === '' ? {} : { tombstoneGcHeldBack: message.tombstoneGcHeldBack }),
    ...(message.membershipChange === '' ? {} : { membershipChange: message.membershipChange }),
    ...(message.membershipChangeProgress === undefined
      ? {}
      : {
          membershipChangeProgress: {
            transfersDone: message.membershipChangeProgress.transfersDone,
            transfersTotal: message.membershipChangeProgress.transfersTotal,
            keys: toNumber(message.membershipChangeProgress.keys),
            bytes: toNumber(message.membershipChangeProgress.bytes),
          },
        }),
    warnings: [...message.warnings],
    redacted: message.redacted,
  };
}

/** A ReplicaDigest message as a plain object (`error` only when there is one). */
export function fromReplicaDigest(message: ReplicaDigestMessage): ReplicaDigest {
  const replica: ReplicaDigest = { nodeId: message.nodeId, digest: message.digest, recordCount: toNumber(message.recordCount) };
  if (message.error !== '') replica.error = message.error;
  return replica;
}

/** A RangeVerification message as a plain object. */
export function fromRangeVerification(message: RangeVerificationMessage): RangeVerification {
  return {
    range: message.range,
    startExclusive: message.startExclusive,
    endInclusive: message.endInclusive,
    agree: message.agree,
    replicas: message.replicas.map(fromReplicaDigest),
    strays: message.strays.map(fromReplicaDigest),
  };
}

/** A VerifyResponse message as a plain object. */
export function fromVerifyResponse(message: VerifyResponse): VerifyReport {
  return { ranges: message.ranges.map(fromRangeVerification), differingRanges: message.differingRanges };
}

/** A PeerRepair message as a plain object (`error` only when there is one). */
export function fromPeerRepair(message: PeerRepairMessage): PeerRepair {
  const peer: PeerRepair = {
    nodeId: message.nodeId,
    rangesCompared: message.rangesCompared,
    rangesDiffering: message.rangesDiffering,
    recordsPulled: toNumber(message.recordsPulled),
    recordsPushed: toNumber(message.recordsPushed),
    bytesTransferred: toNumber(message.bytesTransferred),
    durationMs: message.durationMs,
  };
  if (message.error !== '') peer.error = message.error;
  return peer;
}

/** A RepairResponse message as a plain object. */
export function fromRepairResponse(message: RepairResponse): RepairReport {
  return { peers: message.peers.map(fromPeerRepair) };
}

/** `host:port`, `[ipv6]:port`; the port is 1..65535. */
const endpointPattern = /^(?:\[[0-9A-Fa-f:.%\w]+\]|[A-Za-z0-9._-]+):(\d{1,5})$/;

/**
 * Splits and checks endpoints: each entry may itself be comma-separated; blanks are dropped.
 * Throws an Error naming the bad entry, or saying that none was given.
 *
 * @example
 * ```ts
 * parseEndpoints('10.0.0.1:50051, 10.0.0.2:50051'); // ['10.0.0.1:50051', '10.0.0.2:50051']
 * parseEndpoints(['[::1]:50051']);                  // ['[::1]:50051']
 * ```
 */
export function parseEndpoints(endpoints: string | readonly string[]): string[] {
  const list = (typeof endpoints === 'string' ? [endpoints] : endpoints)
    .flatMap((entry) => entry.split(','))
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '');
  if (list.length === 0) {
    throw new Error('KvClient: at least one endpoint (host:port) is required');
  }
  for (const entry of list) {
    const match = endpointPattern.exec(entry);
    const port = match === null ? 0 : Number(match[1]);
    if (port < 1 || port > 65535) {
      throw new Error(`KvClient: invalid endpoint "${entry}": expected host:port (e.g. 127.0.0.1:50051)`);
    }
  }
  return list;
}

/** A membership change as its request message. */
export function toChangeMembershipRequest(change: MembershipChange): ChangeMembershipRequest {
  switch (change.kind) {
    case 'mark-dead':
      return { markDead: { nodeId: change.nodeId } };
    case 'add':
      return { add: { nodeId: change.nodeId, peer: change.peer } };
    case 'remove':
      return { remove: { nodeId: change.nodeId } };
    case 'replace':
      return { replace: { oldNodeId: change.oldNodeId, newNodeId: change.newNodeId, peer: change.peer } };
    case 'cancel':
      return { cancel: {} };
  }
}
