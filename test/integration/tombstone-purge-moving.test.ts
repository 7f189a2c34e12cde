import { join } from 'node:path';
import { createChannel, createClient, createServer, type Server } from 'nice-grpc';
import { pino } from 'pino';
import { afterEach, expect, it } from 'vitest';
import { PeerServiceDefinition } from '../../gen/kvstore/internal/v1/peer.js';
import { DigestForest } from '../../src/cluster/digest-tree.js';
import { HybridLogicalClock } from '../../src/cluster/hlc.js';
import { proposeChange, seedMembership } from '../../src/cluster/membership.js';
import { RingView } from '../../src/cluster/ring-view.js';
import { errorMiddleware } from '../../src/server/error-middleware.js';
import { createPeerService } from '../../src/server/peer-service.js';
import { encodeRecord } from '../../src/storage/record-codec.js';
import { Repository } from '../../src/storage/repository.js';
import { makeTempDir, removeTempDir } from '../helpers/node-process.js';

/**
 * PurgeTombstones on a member that knows of a membership change keeps the tombstones of moving
 * ranges, whatever the sender's view (src/replication/replica.ts): it may already have served
 * them in a stream page, and purged here they would come back on the joiner alone when it applies
 * the page. Real LMDB repository and the real peer service on a gRPC server on 127.0.0.1.
 */

const placement = { replicationFactor: 3, vnodesPerMember: 8 };
const members = ['n1', 'n2', 'n3'].map((id) => ({ id, peer: `${id}:1` }));
const before = seedMembership(members);
const adding = proposeChange(before, { kind: 'add', id: 'n4', peer: 'n4:1' }, placement.replicationFactor);
if (!('state' in adding)) throw new Error(adding.refusal);
const normalView = RingView.from(before, placement);
const pendingView = RingView.from(adding.state, placement);

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

it('a member in a change keeps the tombstones of moving ranges it is asked to purge, and purges the others; after the change it purges them all', async () => {
  const dir = makeTempDir('kvstore-purge-moving-');
  cleanups.push(() => removeTempDir(dir));
  const repo = Repository.open({ dataDir: join(dir, 'data'), nodeId: 'n2', peers: ['n1', 'n3', 'n4'] });
  cleanups.push(() => repo.close());
  let view = pendingView;
  const forest = new DigestForest(normalView.unionRing);
  const server: Server = createServer().use(errorMiddleware(pino({ level: 'silent' })));
  server.add(
    PeerServiceDefinition,
    createPeerService({
      selfId: 'n2',
      repo,
      clock: new HybridLogicalClock('n2', Date.now),
      membership: { view: () => view, forest: () => forest, forestRing: () => view.unionRing },
      replicationFactor: placement.replicationFactor,
      maxKeyBytes: 1974,
      graceSeconds: 10,
      wallClock: Date.now,
      members: new Set(['n1', 'n2', 'n3', 'n4']),
      assertServing: () => {},
      backup: () => Promise.reject(new Error('no backups here')),
      closing: new AbortController().signal,
      checkFetch: () => undefined,
      sendThrottle: { take: async () => {} },
    }),
  );
  const port = await server.listen('127.0.0.1:0');
  cleanups.push(() => server.forceShutdown());
  const channel = createChannel(`127.0.0.1:${port}`);
  cleanups.push(() => channel.close());
  const peer = createClient(PeerServiceDefinition, channel);

  // Keys in ranges the add moves (n4 takes them over) and keys in ranges it leaves alone.
  const keys = Array.from({ length: 400 }, (_, i) => Buffer.from(`k${i}`));
  const moving = keys.filter((k) => pendingView.isMovingHash(pendingView.readRing.hashKey(k))).slice(0, 20);
  const staying = keys.filter((k) => !pendingView.isMovingHash(pendingView.readRing.hashKey(k))).slice(0, 20);
  expect(moving.length).toBe(20);
  expect(staying.length).toBe(20);
  const tombstone = encodeRecord({ version: { wallMs: Date.now() - 60_000, counter: 0, nodeId: 'n1' }, tombstone: true, value: Buffer.alloc(0) });
  const tombstones = [...moving, ...staying].map((key) => ({ key, record: tombstone }));
  await repo.applyRecords(tombstones);

  const during = await peer.purgeTombstones({ fromNodeId: 'n1', tombstones });
  expect(during.purged).toBe(staying.length);
  expect(moving.filter((k) => repo.getRecordHeader(k)?.equals(tombstone) !== true).map(String)).toEqual([]);
  expect(staying.filter((k) => repo.getRecordHeader(k) !== undefined).map(String)).toEqual([]);

  // The change is over (this node's view): the same request purges the rest.
  view = normalView;
  const after = await peer.purgeTombstones({ fromNodeId: 'n1', tombstones });
  expect(after.purged).toBe(moving.length);
  expect(moving.filter((k) => repo.getRecordHeader(k) !== undefined).map(String)).toEqual([]);
});
