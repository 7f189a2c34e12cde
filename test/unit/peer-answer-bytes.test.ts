import { join } from 'node:path';
import { Metadata, type CallContext } from 'nice-grpc-common';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BucketRecordsResponse, ReadReplicaResponse, type BucketRecordsRequest, type PeerServiceImplementation } from '../../gen/kvstore/internal/v1/peer.js';
import { DigestForest, leafBucketsPerRange } from '../../src/cluster/digest-tree.js';
import { HybridLogicalClock } from '../../src/cluster/hlc.js';
import { murmur3x86_32 } from '../../src/cluster/hash.js';
import { Ring, ringHashSeed } from '../../src/cluster/ring.js';
import { RingView } from '../../src/cluster/ring-view.js';
import { seedMembership } from '../../src/cluster/membership.js';
import { InvalidRequestError } from '../../src/replication/errors.js';
import { countWithinBytes, keyMessageBytes, recordMessageBytes } from '../../src/replication/message-bytes.js';
import { createPeerService, peerAnswerBytesMax } from '../../src/server/peer-service.js';
import { encodeRecord } from '../../src/storage/record-codec.js';
import { Repository } from '../../src/storage/repository.js';
import { makeTempDir, removeTempDir } from '../helpers/node-process.js';

/**
 * The byte bounds of peer answers, on a real Repository in a temp dir behind the real peer
 * service: ReadReplica answers a prefix within max_bytes, BucketRecords pages resume exactly
 * where the previous page stopped (mid-bucket or at a bucket's end), whatever the page size.
 */

const members = ['n1', 'n2', 'n3'].map((id) => ({ id }));
/** One vnode per member: 3 wide ranges, so one range holds hundreds of the test's keys. */
const ring = new Ring(members, 1);
const view = RingView.from(seedMembership(members.map((m) => ({ id: m.id, peer: `${m.id}:1` }))), { replicationFactor: 3, vnodesPerMember: 1 });
const context: CallContext = { metadata: Metadata(), peer: 'test', header: Metadata(), sendHeader: () => {}, trailer: Metadata(), signal: new AbortController().signal };

let dir: string;
let repo: Repository;
let service: PeerServiceImplementation;
let forest: DigestForest;

beforeEach(() => {
  dir = makeTempDir('kvstore-peer-answer-');
  repo = Repository.open({ dataDir: join(dir, 'data'), nodeId: 'n1', peers: ['n2', 'n3'] });
  forest = new DigestForest(ring);
  repo.observeRecords((key, keyHash, oldHeader, newHeader) => forest.apply(keyHash, key, oldHeader, newHeader));
  service = createPeerService({
    selfId: 'n1',
    repo,
    clock: new HybridLogicalClock('n1', Date.now),
    members: new Set(members.map((m) => m.id)),
    membership: { view: () => view, forest: () => forest, forestRing: () => view.unionRing },
    assertServing: () => {},
    replicationFactor: 3,
    maxKeyBytes: 1974,
    graceSeconds: 86_400,
    wallClock: Date.now,
    backup: () => Promise.reject(new Error('no backups here')),
    closing: new AbortController().signal,
  });
});

afterEach(async () => {
  await repo.close();
  removeTempDir(dir);
});

function recordOf(i: number, valueBytes: number): Buffer {
  return encodeRecord({ version: { wallMs: 1_700_000_000_000 + i, counter: 0, nodeId: 'n1' }, tombstone: i % 5 === 0, value: i % 5 === 0 ? Buffer.alloc(0) : Buffer.alloc(valueBytes, i % 251) });
}

/** Stores `count` records with keys of 1..1974 bytes (varying), values of `valueBytes`; answers the keys. */
async function store(count: number, valueBytes: number): Promise<Buffer[]> {
  const keys = Array.from({ length: count }, (_, i) => Buffer.from(`k${i}-`.padEnd(1 + ((i * 37) % 1974), 'x')));
  await repo.applyRecords(keys.map((key, i) => ({ key, record: recordOf(i, valueBytes) })));
  return keys;
}

/** Records as comparable strings (toEqual on large Buffers compares byte by byte, slowly). */
function ids(records: readonly { key: Buffer; record: Buffer }[]): string[] {
  return records.map((r) => `${r.key.toString('hex')}:${r.record.toString('hex')}`);
}

/** Records' bytes as the answerers count them. */
function bytesOf(records: readonly { key: Uint8Array; record: Uint8Array }[]): number {
  return records.reduce((sum, r) => sum + recordMessageBytes(r.key, r.record), 0);
}

/** Every page of a BucketRecords listing of `buckets` in range 0, at `maxBytes` a page. */
async function pages(buckets: readonly number[], maxBytes: number) {
  const out: BucketRecordsResponse[] = [];
  let request: BucketRecordsRequest = { fromNodeId: 'n2', range: 0, buckets: [...buckets], maxBytes: BigInt(maxBytes), startAfterKey: Buffer.alloc(0) };
  for (;;) {
    const page = BucketRecordsResponse.fromPartial(await service.bucketRecords(request, context));
    out.push(page);
    if (!page.more) return out;
    expect(out.length).toBeLessThan(10_000);
    request = { ...request, buckets: request.buckets.slice(request.buckets.indexOf(page.nextBucket)), startAfterKey: page.nextAfterKey };
  }
}

describe('message byte accounting', () => {
  it('counts at least what protobuf encodes, and takes at least one item', () => {
    const records = Array.from({ length: 50 }, (_, i) => ({ key: Buffer.alloc(1 + i * 40, 1), record: recordOf(i, i * 3000) }));
    expect(bytesOf(records)).toBeGreaterThanOrEqual(ReadReplicaResponse.encode({ records }).finish().length);
    const size = (r: { key: Buffer; record: Buffer }) => recordMessageBytes(r.key, r.record);
    expect(countWithinBytes(records, 0, 1, size)).toBe(1);
    expect(countWithinBytes(records, 50, 1_000_000, size)).toBe(0);
    expect(countWithinBytes(records, 0, Infinity, size, 7)).toBe(7);
    const n = countWithinBytes(records, 10, 100_000, size);
    expect(bytesOf(records.slice(10, 10 + n))).toBeLessThanOrEqual(100_000);
    expect(bytesOf(records.slice(10, 11 + n))).toBeGreaterThan(100_000);
    expect(keyMessageBytes(Buffer.alloc(1974))).toBeGreaterThan(1974);
  });
});

describe('ReadReplica answers within max_bytes', () => {
  it('answers a prefix of the asked keys within max_bytes (at least one), the absent ones included', async () => {
    const keys = await store(40, 20_000);
    const asked = [Buffer.from('absent'), ...keys];
    const all = ReadReplicaResponse.fromPartial(await service.readReplica({ fromNodeId: 'n2', keys: asked, maxBytes: 0n }, context)).records;
    expect(all.length).toBe(asked.length);
    expect(all[0]!.record.length).toBe(0);
    for (const maxBytes of [1, 30_000, 100_000, 333_333]) {
      let from = 0;
      while (from < asked.length) {
        const answer = ReadReplicaResponse.fromPartial(await service.readReplica({ fromNodeId: 'n2', keys: asked.slice(from), maxBytes: BigInt(maxBytes) }, context));
        const n = answer.records.length;
        expect(n).toBeGreaterThan(0);
        expect(ids(answer.records)).toEqual(ids(all.slice(from, from + n)));
        if (n > 1) expect(ReadReplicaResponse.encode(answer).finish().length).toBeLessThanOrEqual(maxBytes);
        // Short only because the next record would not fit.
        if (from + n < asked.length) expect(bytesOf(all.slice(from, from + n + 1))).toBeGreaterThan(maxBytes);
        from += n;
      }
    }
  });

  it('caps what it answers at peerAnswerBytesMax when asked for more or for no bound', async () => {
    const keys = await store(12, 1024 * 1024);
    for (const maxBytes of [0n, 1n << 40n]) {
      const answer = ReadReplicaResponse.fromPartial(await service.readReplica({ fromNodeId: 'n2', keys, maxBytes }, context));
      expect(answer.records.length).toBeLessThan(keys.length);
      expect(bytesOf(answer.records)).toBeLessThanOrEqual(peerAnswerBytesMax);
    }
  });
});

describe('BucketRecords pages', () => {
  it('whatever the page size, the pages hold every record of the asked buckets once, in the unpaged order', async () => {
    await store(1500, 10);
    const buckets = Array.from({ length: leafBucketsPerRange }, (_, b) => (b * 7) % leafBucketsPerRange);
    const [whole, ...rest] = await pages(buckets, peerAnswerBytesMax);
    expect(rest).toEqual([]);
    expect(whole!.records.length).toBe(forest.recordCount(0));
    expect(whole!.records.length).toBeGreaterThan(100);
    for (const maxBytes of [1, 2_500, 40_000]) {
      const paged = await pages(buckets, maxBytes);
      expect(paged.length).toBeGreaterThan(1);
      expect(ids(paged.flatMap((p) => p.records))).toEqual(ids(whole!.records));
      for (const p of paged) {
        expect(p.records.length).toBeGreaterThan(0);
        if (p.records.length > 1) expect(bytesOf(p.records)).toBeLessThanOrEqual(maxBytes);
      }
    }
  });

  it('refuses a resume key that does not hash into the first asked bucket', async () => {
    await store(300, 10);
    const [whole] = await pages(Array.from({ length: leafBucketsPerRange }, (_, b) => b), peerAnswerBytesMax);
    const last = whole!.records.at(-1)!;
    expect(forest.bucketOf(0, murmur3x86_32(last.key, ringHashSeed))).not.toBe(0);
    await expect(service.bucketRecords({ fromNodeId: 'n2', range: 0, buckets: [0], maxBytes: 0n, startAfterKey: last.key }, context)).rejects.toThrow(InvalidRequestError);
  });
});
