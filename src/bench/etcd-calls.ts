/**
 * etcd v3's unary KV calls for `kvctl bench --client etcd`: the same load generator, worker
 * threads, histograms and server-CPU reading drive an etcd cluster, so BENCHMARKS.md compares
 * kvstore's one-call-per-operation path with etcd's in the same minutes on the same machine
 * (issue 17 measured against etcd 3.4; Debian's etcd-server package is 3.4).
 *
 * The three requests are encoded by hand (etcd's rpc.proto, etcdserverpb): a dependency on
 * etcd's protos for three messages of one or two fields each would be heavier than this.
 * - PutRequest { bytes key = 1; bytes value = 2; }
 * - RangeRequest { bytes key = 1; ...; bool serializable = 7; }
 * - DeleteRangeRequest { bytes key = 1; }
 */
import type { ConsistencyLevel } from '../client/index.js';
import type { UnaryCalls } from './driver.js';

/** Wire type 2 (length-delimited) tags of fields 1 and 2, and the varint tag of field 7. */
const keyTag = 0x0a;
const valueTag = 0x12;
const serializableTag = 0x38;

/**
 * `--consistency one` reads serializably (the member's own state, like a kvstore read at ONE);
 * quorum and all read linearizably (etcd's default, through the leader's read index).
 */
export function etcdUnaryCalls(consistency: ConsistencyLevel | undefined): UnaryCalls {
  const serializable = consistency === 'one';
  return {
    paths: { get: '/etcdserverpb.KV/Range', put: '/etcdserverpb.KV/Put', delete: '/etcdserverpb.KV/DeleteRange' },
    encode: (op, key, value) => {
      if (op === 'put') return Buffer.concat([field(keyTag, key), field(valueTag, value)]);
      if (op === 'get' && serializable) return Buffer.concat([field(keyTag, key), Buffer.from([serializableTag, 1])]);
      return field(keyTag, key);
    },
  };
}

/** One length-delimited field: tag, varint length, bytes. */
function field(tag: number, bytes: Buffer): Buffer {
  const header = [tag];
  let length = bytes.length;
  while (length >= 0x80) {
    header.push((length & 0x7f) | 0x80);
    length >>>= 7;
  }
  header.push(length);
  return Buffer.concat([Buffer.from(header), bytes]);
}
