import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { type Channel, createChannel, createClient, createServer, type Server, Status } from 'nice-grpc';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { type FetchRangeRequest, PeerServiceDefinition, type PeerServiceClient } from '../../gen/kvstore/internal/v1/peer.js';
import { Rng } from '../../src/common/rng.js';
import { DigestForest } from '../../src/cluster/digest-tree.js';
import { murmur3x86_32 } from '../../src/cluster/hash.js';
import { HybridLogicalClock } from '../../src/cluster/hlc.js';
import { Ring } from '../../src/cluster/ring.js';
import { RingView } from '../../src/cluster/ring-view.js';
import { seedMembership } from '../../src/cluster/membership.js';
import { systemClock } from '../../src/platform/clock.js';
import { recordFramingBytesMax, recordMessageBytes } from '../../src/replication/message-bytes.js';
import { decodeTransferCursor, type FetchRangeClient, type RangeStreamerSettings, RangeStreamer, type RangeTransfer, transferCursorName } from '../../src/replication/range-streamer.js';
import { errorMiddleware } from '../../src/server/error-middleware.js';
import { malformedRequestMiddleware, withMalformedRequestsMarked } from '../../src/server/malformed-requests.js';
import { createPeerService, type PeerServiceDeps } from '../../src/server/peer-service.js';
import { encodeRecord } from '../../src/storage/record-codec.js';
import { Repository, type StoredRecord } from '../../src/storage/repository.js';
import { makeTempDir, removeTempDir } from '../helpers/node-process.js';
import { waitFor } from '../helpers/wait.js';

/**
 * Range streaming (docs/membership.md §5, plan step 6a) over the real peer service: source nodes
 * with their own LMDB repository in a temp dir behind the peer-service handlers on real gRPC
 * servers on 127.0.0.1, and a receiver (n4) whose RangeStreamer pulls FetchRange pages into its
 * own repository. Record sets are drawn from a seeded generator (KVSTORE_TEST_SEED overrides).
 */

const seed = Number(process.env['KVSTORE_TEST_SEED'] ?? 20_261_201);
console.log(`range-streaming.test.ts: seed ${seed} (rerun with KVSTORE_TEST_SEED=${seed})`);

const ids = ['n1', 'n2', 'n3', 'n4'];
const receiverId = 'n4';
const changeId = 1;
const silent = pino({ level: 'silent' });
/** Streamed by test (a) and (b): half the circle, wrapping past 2^32 - 1. */
const half = { startExclusive: 0xc0000000, endInclusive: 0x40000000 };

interface SourceNode {
  readonly id: string;
  readonly dir: string;
  readonly repo: Repository;
  server: Server | undefined;
  port: number;
  /** checkFetch's answer while set. */
  refusal: ((request: FetchRangeRequest) => string | undefined) | undefined;
  /** Bytes the source's send throttle was asked for. */
  throttled: number;
  /** Requests checkFetch saw. */
  readonly checked: FetchRangeRequest[];
}

interface Receiver {
  readonly dir: string;
  repo: Repository;
  repoOpen: boolean;
  readonly hlc: HybridLogicalClock;
}

/** One FetchRange answer the receiver got. */
interface Page {
  readonly source: string;
  readonly startExclusive: number;
  readonly records: number;
  /** As the answerer bounds them (recordMessageBytes). */
  readonly bytes: number;
  readonly done: boolean;
}

interface Harness {
  readonly sources: Map<string, SourceNode>;
  readonly receiver: Receiver;
  readonly channels: Channel[];
  readonly pages: Page[];
  readonly streamers: RangeStreamer[];
  /** The receiver's connections, one channel per source address (a restarted source has a new port). */
  clientOf(id: string): FetchRangeClient | undefined;
}

const harnesses: Harness[] = [];

afterEach(async () => {
  for (const h of harnesses.splice(0)) {
    for (const s of h.streamers) await s.stop();
    for (const channel of h.channels) channel.close();
    for (const n of h.sources.values()) {
      n.server?.forceShutdown();
      await n.repo.close();
      removeTempDir(n.dir);
    }
    if (h.receiver.repoOpen) await h.receiver.repo.close();
    removeTempDir(h.receiver.dir);
  }
});

function peerDeps(node: SourceNode): PeerServiceDeps {
  const ring = new Ring(ids.map((id) => ({ id })), 1);
  const forest = new DigestForest(ring);
  const view = RingView.from(seedMembership(ids.map((id) => ({ id, peer: `${id}:1` }))), { replicationFactor: 3, vnodesPerMember: 1 });
  return {
    selfId: node.id,
    repo: node.repo,
    clock: new HybridLogicalClock(node.id, Date.now),
    membership: { view: () => view, forest: () => forest, forestRing: () => view.unionRing },
    replicationFactor: 3,
    maxKeyBytes: 1974,
    graceSeconds: 86_400,
    wallClock: Date.now,
    members: new Set(ids),
    assertServing: () => {},
    backup: () => Promise.reject(new Error('no backups here')),
    closing: new AbortController().signal,
    checkFetch: (request) => {
      node.checked.push(request);
      return node.refusal?.(request);
    },
    sendThrottle: {
      take: async (bytes) => {
        node.throttled += bytes;
      },
    },
  };
}

async function serve(node: SourceNode): Promise<void> {
  const server = createServer().use(errorMiddleware(silent));
  server.with(malformedRequestMiddleware()).add(withMalformedRequestsMarked(PeerServiceDefinition), createPeerService(peerDeps(node)));
  node.port = await server.listen('127.0.0.1:0');
  node.server = server;
}

function stopServing(node: SourceNode): void {
  node.server?.forceShutdown();
  node.server = undefined;
}

/** Sources `sourceIds`, each holding `records`, serving; an empty receiver. */
async function startHarness(sourceIds: readonly string[], records: readonly StoredRecord[]): Promise<Harness> {
  const sources = new Map<string, SourceNode>();
  for (const id of sourceIds) {
    const dir = makeTempDir(`kvstore-stream-${id}-`);
    const repo = Repository.open({ dataDir: join(dir, 'data'), nodeId: id, peers: ids.filter((p) => p !== id) });
    for (let i = 0; i < records.length; i += 500) await repo.applyRecords(records.slice(i, i + 500));
    const node: SourceNode = { id, dir, repo, server: undefined, port: 0, refusal: undefined, throttled: 0, checked: [] };
    await serve(node);
    sources.set(id, node);
  }
  const dir = makeTempDir('kvstore-stream-n4-');
  const receiver: Receiver = { dir, repo: openReceiverRepo(dir), repoOpen: true, hlc: new HybridLogicalClock(receiverId, Date.now) };
  const channels: Channel[] = [];
  const pages: Page[] = [];
  const clients = new Map<string, PeerServiceClient>();
  const harness: Harness = {
    sources,
    receiver,
    channels,
    pages,
    streamers: [],
    clientOf(id) {
      const node = sources.get(id);
      if (node === undefined) return undefined;
      const address = `127.0.0.1:${node.port}`;
      let client = clients.get(address);
      if (client === undefined) {
        const channel = createChannel(address);
        channels.push(channel);
        client = createClient(PeerServiceDefinition, channel);
        clients.set(address, client);
      }
      const c = client;
      return {
        fetchRange: async (request, options) => {
          const answer = await c.fetchRange(request, options);
          pages.push({ source: id, startExclusive: request.startExclusive ?? 0, records: answer.records.length, bytes: bytesOf(answer.records), done: answer.done });
          return answer;
        },
      };
    },
  };
  harnesses.push(harness);
  return harness;
}

function openReceiverRepo(dir: string): Repository {
  return Repository.open({ dataDir: join(dir, 'data'), nodeId: receiverId, peers: ids.filter((p) => p !== receiverId) });
}

async function reopenReceiver(h: Harness): Promise<void> {
  await h.receiver.repo.close();
  h.receiver.repoOpen = false;
  h.receiver.repo = openReceiverRepo(h.receiver.dir);
  h.receiver.repoOpen = true;
}

function streamer(h: Harness, transfers: readonly RangeTransfer[], settings: Partial<RangeStreamerSettings>, rngSeed: number, isDead?: (id: string) => boolean): RangeStreamer {
  const s = new RangeStreamer({
    selfId: receiverId,
    changeId,
    epoch: 2,
    transfers,
    clientOf: (id) => h.clientOf(id),
    repo: h.receiver.repo,
    hlc: h.receiver.hlc,
    clock: systemClock,
    rng: new Rng(rngSeed),
    settings: { peerCallMs: 5_000, maxBytesPerSecond: 0, ...settings },
    logger: silent,
    ...(isDead === undefined ? {} : { isDead }),
  });
  h.streamers.push(s);
  return s;
}

function bytesOf(records: readonly { key: Uint8Array; record: Uint8Array }[]): number {
  return records.reduce((sum, r) => sum + recordMessageBytes(r.key, r.record), 0);
}

function inInterval(key: Buffer, startExclusive: number, endInclusive: number): boolean {
  const h = murmur3x86_32(key, 0);
  if (startExclusive === endInclusive) return true;
  return startExclusive < endInclusive ? h > startExclusive && h <= endInclusive : h > startExclusive || h <= endInclusive;
}

/**
 * `count` records of random keys (hashing all over the circle), values of 0..`valueBytesMax`
 * bytes and about 15% tombstones, versions by n1..n3; plus `oversize` records of 80 KiB values
 * whose keys hash into `half`, and a few versions 30 s in the future (the receiver's HLC must
 * observe them).
 */
function dataset(rng: Rng, count: number, valueBytesMax: number, oversize = 0): StoredRecord[] {
  const baseMs = Date.now() - 3_600_000;
  const out: StoredRecord[] = [];
  const recordOf = (valueBytes: number, wallMs: number) => {
    const tombstone = rng.next() < 0.15;
    return encodeRecord({
      version: { wallMs, counter: rng.nextInt(100), nodeId: ids[rng.nextInt(3)]! },
      tombstone,
      value: tombstone ? Buffer.alloc(0) : Buffer.alloc(valueBytes, rng.nextInt(256)),
    });
  };
  for (let i = 0; i < count; i++) {
    const key = Buffer.from(`user/${i.toString(36)}/${rng.nextUint32().toString(16)}`.padEnd(8 + rng.nextInt(40), '.'));
    out.push({ key, record: recordOf(rng.nextInt(valueBytesMax + 1), i % 1000 === 7 ? Date.now() + 30_000 : baseMs + rng.nextInt(3_000_000)) });
  }
  for (let made = 0; made < oversize; ) {
    const key = Buffer.from(`big/${rng.nextUint32().toString(16)}`);
    if (!inInterval(key, half.startExclusive, half.endInclusive)) continue;
    out.push({ key, record: encodeRecord({ version: { wallMs: baseMs, counter: 0, nodeId: 'n1' }, tombstone: false, value: Buffer.alloc(80 * 1024, 7) }) });
    made++;
  }
  return out;
}

/** A repository's records of an interval as comparable strings, in hash order. */
function contents(repo: Repository, startExclusive: number, endInclusive: number): string[] {
  return repo.recordsInHashInterval(startExclusive, endInclusive).map((r) => `${r.key.toString('hex')}:${createHash('sha256').update(r.record).digest('hex')}`);
}

/** Pages a clean stream of the interval takes from `repo` at `maxBytes` a page (as the source answers them). */
function pagesOf(repo: Repository, startExclusive: number, endInclusive: number, maxBytes: number): number {
  let after: Buffer | undefined;
  for (let pages = 1; ; pages++) {
    const page = repo.recordsInHashIntervalPage(startExclusive, endInclusive, after, maxBytes, recordFramingBytesMax);
    if (page.done) return pages;
    after = page.next;
  }
}

/** `half` in three transfers, the middle one wrapping past 2^32 - 1. */
function threeTransfers(primary: string | undefined, fallbacks: string[]): RangeTransfer[] {
  return [
    { id: 'c0000000', startExclusive: 0xc0000000, endInclusive: 0xe0000000, primary, fallbacks },
    { id: 'e0000000', startExclusive: 0xe0000000, endInclusive: 0x20000000, primary, fallbacks },
    { id: '20000000', startExclusive: 0x20000000, endInclusive: 0x40000000, primary, fallbacks },
  ];
}

describe('range streaming over FetchRange', () => {
  it('(a) pulls an interval of ~3,000 records in pages within batchMaxBytes; the receiver then holds exactly the source records of the interval', async () => {
    const records = dataset(new Rng(seed), 6_000, 2_500, 3);
    const h = await startHarness(['n1', 'n2'], records);
    const n1 = h.sources.get('n1')!;
    const expected = contents(n1.repo, half.startExclusive, half.endInclusive);
    expect(expected.length).toBeGreaterThan(2_500);
    expect(expected.length).toBeLessThan(3_600);
    // Older versions of some interval keys on the receiver are overwritten (LWW).
    const older = n1.repo
      .recordsInHashInterval(half.startExclusive, half.endInclusive)
      .filter((_, i) => i % 50 === 0)
      .map((r) => ({ key: r.key, record: encodeRecord({ version: { wallMs: 1_000, counter: 0, nodeId: 'n4' }, tombstone: false, value: Buffer.from('stale') }) }));
    await h.receiver.repo.applyRecords(older);

    const batchMaxBytes = 32 * 1024;
    const s = streamer(h, threeTransfers('n1', ['n2']), { batchMaxBytes, rangesInFlight: 2 }, seed);
    s.start();
    await s.whenComplete();

    // Every page within the bound, except the oversize records, each alone.
    expect(h.pages.every((p) => p.source === 'n1')).toBe(true);
    for (const p of h.pages) if (p.bytes > batchMaxBytes) expect(p.records, JSON.stringify(p)).toBe(1);
    expect(h.pages.filter((p) => p.bytes > batchMaxBytes)).toHaveLength(3);
    expect(h.pages.length).toBeGreaterThan(50);
    expect(h.pages.filter((p) => p.done)).toHaveLength(3);
    // Exactly the source's records of the interval, nothing from outside it.
    expect(contents(h.receiver.repo, half.startExclusive, half.endInclusive)).toEqual(expected);
    expect(h.receiver.repo.recordCounts().records).toBe(expected.length);
    // The HLC observed the versions 30 s ahead.
    const newestWall = Math.max(...n1.repo.recordsInHashInterval(half.startExclusive, half.endInclusive).map((r) => r.record.readUIntBE(1, 6)));
    expect(newestWall).toBeGreaterThan(Date.now());
    expect(h.receiver.hlc.reading().wallMs).toBeGreaterThanOrEqual(newestWall);
    // Progress, cursors, the source's throttle.
    const progress = s.progress();
    expect(progress.complete).toBe(true);
    expect(progress.keys).toBe(expected.length);
    expect(progress.transfers.map((t) => [t.id, t.done, Object.keys(t.sources)])).toEqual([
      ['c0000000', true, ['n1']],
      ['e0000000', true, ['n1']],
      ['20000000', true, ['n1']],
    ]);
    expect(n1.throttled).toBe(h.pages.reduce((sum, p) => sum + p.bytes, 0));
    expect(n1.checked.every((r) => r.fromNodeId === 'n4' && r.epoch === 2n && r.changeId === 1n && r.maxBytes === BigInt(batchMaxBytes))).toBe(true);
    const names = h.receiver.repo.transferCursorNames(`${changeId}/`);
    expect(names).toEqual(['1/20000000/n1', '1/c0000000/n1', '1/e0000000/n1']);
    for (const name of names) expect(decodeTransferCursor(h.receiver.repo.transferCursor(name)!)).toMatchObject({ done: true, primary: true });
    await s.stop();
    expect(await s.clearCursors(changeId)).toBe(3);
    expect(h.receiver.repo.transferCursorNames('')).toEqual([]);
  });

  it('(b) a receiver restarted mid-stream resumes from its cursors: pages fetched after the restart <= pages left + rangesInFlight', async () => {
    const records = dataset(new Rng(seed + 1), 6_000, 2_500);
    const h = await startHarness(['n1'], records);
    const n1 = h.sources.get('n1')!;
    const batchMaxBytes = 24 * 1024;
    const rangesInFlight = 2;
    const transfers = threeTransfers('n1', []);
    const total = transfers.reduce((sum, t) => sum + pagesOf(n1.repo, t.startExclusive, t.endInclusive, batchMaxBytes), 0);
    expect(total).toBeGreaterThan(60);

    let persisted = 0;
    let stopping: Promise<void> | undefined;
    const first = streamer(h, transfers, { batchMaxBytes, rangesInFlight, maxBytesPerSecond: 64 * 1024 * 1024 }, seed);
    first.onPage(() => {
      persisted++;
      if (persisted === Math.floor(total / 3)) stopping = first.stop();
    });
    first.start();
    await waitFor('the first streamer to stop a third of the way', () => stopping !== undefined);
    await stopping;
    await expect(first.whenComplete()).rejects.toThrow(/stopped before it completed/);
    expect(first.isComplete()).toBe(false);
    await reopenReceiver(h);

    const fetchedBefore = h.pages.length;
    const second = streamer(h, transfers, { batchMaxBytes, rangesInFlight }, seed + 1);
    // Resumed from the cursors before pulling anything.
    const resumed = second.progress();
    expect(resumed.keys).toBeGreaterThan(0);
    expect(resumed.keys).toBe(first.progress().keys);
    second.start();
    await second.whenComplete();
    const fetchedAfter = h.pages.length - fetchedBefore;
    const left = total - persisted;
    console.log(`(b): ${total} pages in all, ${persisted} persisted before the restart, ${fetchedAfter} fetched after it`);
    expect(fetchedAfter).toBeLessThanOrEqual(left + rangesInFlight);
    expect(fetchedAfter).toBeLessThan(total);
    expect(contents(h.receiver.repo, half.startExclusive, half.endInclusive)).toEqual(contents(n1.repo, half.startExclusive, half.endInclusive));
    expect(h.receiver.repo.recordCounts().records).toBe(contents(n1.repo, half.startExclusive, half.endInclusive).length);
  });

  it('(c1) a primary stopped mid-stream: after sourceFailoverSeconds the fallbacks stream too, but only the primary completes the transfer', async () => {
    const records = dataset(new Rng(seed + 2), 2_000, 1_000);
    const h = await startHarness(['n1', 'n2', 'n3'], records);
    const [n1, n2] = [h.sources.get('n1')!, h.sources.get('n2')!];
    const transfer: RangeTransfer = { id: 'c0000000', ...half, primary: 'n1', fallbacks: ['n2', 'n3'] };
    const s = streamer(h, [transfer], { batchMaxBytes: 16 * 1024, rangesInFlight: 2, sourceFailoverSeconds: 1 }, seed);
    let fromN1 = 0;
    s.onPage((page) => {
      if (page.source === 'n1' && ++fromN1 === 3) stopServing(n1);
    });
    s.start();
    const failedOver = await waitFor('both fallbacks to finish streaming', () => {
      const t = s.progress().transfers[0]!;
      return t.sources['n2']?.done === true && t.sources['n3']?.done === true && t;
    });
    expect(s.progress().sourceFailovers).toBe(1);
    expect(failedOver.fallbacksActive).toBe(true);
    expect(failedOver.sources['n2']!.bytes).toBeGreaterThan(0);
    expect(failedOver.sources['n3']!.bytes).toBeGreaterThan(0);
    expect(failedOver.sources['n1']).toMatchObject({ role: 'primary', done: false });
    expect(failedOver.sources['n1']!.failures).toBeGreaterThan(0);
    expect(failedOver.sources['n1']!.lastError).toMatch(/UNAVAILABLE/);
    // The primary is a live member: without its stream the transfer is not complete.
    expect(failedOver.done).toBe(false);
    expect(s.isComplete()).toBe(false);

    // It comes back (on a new port) and its stream resumes from its cursor.
    await serve(n1);
    await s.whenComplete();
    const done = s.progress().transfers[0]!;
    expect(done.done).toBe(true);
    expect(done.sources['n1']!.done).toBe(true);
    expect(contents(h.receiver.repo, half.startExclusive, half.endInclusive)).toEqual(contents(n2.repo, half.startExclusive, half.endInclusive));
    expect(h.receiver.repo.recordCounts().records).toBe(contents(n2.repo, half.startExclusive, half.endInclusive).length);
  });

  it('(c2) a primary stopped mid-stream and then passed as dead (undefined): a restarted streamer completes from every fallback alone', async () => {
    const records = dataset(new Rng(seed + 3), 2_000, 1_000);
    const h = await startHarness(['n1', 'n2', 'n3'], records);
    const n1 = h.sources.get('n1')!;
    const transfer: RangeTransfer = { id: 'c0000000', ...half, primary: 'n1', fallbacks: ['n2', 'n3'] };
    const first = streamer(h, [transfer], { batchMaxBytes: 16 * 1024, rangesInFlight: 2 }, seed);
    let fromN1 = 0;
    first.onPage((page) => {
      if (page.source === 'n1' && ++fromN1 === 3) stopServing(n1);
    });
    first.start();
    await waitFor('the primary to fail', () => (first.progress().transfers[0]!.sources['n1']?.failures ?? 0) > 0);
    await first.stop();
    const primaryCursor = decodeTransferCursor(h.receiver.repo.transferCursor(transferCursorName(changeId, 'c0000000', 'n1'))!);
    expect(primaryCursor).toMatchObject({ done: false, primary: true });
    expect(primaryCursor.keys).toBeGreaterThan(0);

    // n1 is declared dead: the same transfer without a primary.
    const fetchedBefore = h.pages.length;
    const second = streamer(h, [{ ...transfer, primary: undefined }], { batchMaxBytes: 16 * 1024, rangesInFlight: 2 }, seed + 1);
    second.start();
    await second.whenComplete();
    const t = second.progress().transfers[0]!;
    expect(t.done).toBe(true);
    expect(Object.keys(t.sources).sort()).toEqual(['n2', 'n3']);
    expect(t.sources['n2']).toMatchObject({ role: 'fallback', done: true });
    expect(t.sources['n3']).toMatchObject({ role: 'fallback', done: true });
    expect(t.sources['n2']!.bytes).toBeGreaterThan(0);
    expect(h.pages.slice(fetchedBefore).some((p) => p.source === 'n1')).toBe(false);
    expect(contents(h.receiver.repo, half.startExclusive, half.endInclusive)).toEqual(contents(h.sources.get('n2')!.repo, half.startExclusive, half.endInclusive));
  });

  it('(c3) a primary stopped mid-stream and declared dead while the streamer runs (not restarted): its fallbacks complete the transfer', async () => {
    // The simulator found a change stuck for good without this (seed 7026 --nodes 5): the
    // receiver's streamer is built once per change, and its primary was declared dead later.
    const records = dataset(new Rng(seed + 4), 2_000, 1_000);
    const h = await startHarness(['n1', 'n2', 'n3'], records);
    const n1 = h.sources.get('n1')!;
    const dead = new Set<string>();
    const transfer: RangeTransfer = { id: 'c0000000', ...half, primary: 'n1', fallbacks: ['n2', 'n3'] };
    // A failover far beyond the test's bounds: only the declaration brings the fallbacks in.
    const s = streamer(h, [transfer], { batchMaxBytes: 16 * 1024, rangesInFlight: 2, sourceFailoverSeconds: 3600, retryDelayMaxMs: 200 }, seed, (id) => dead.has(id));
    let fromN1 = 0;
    s.onPage((page) => {
      if (page.source === 'n1' && ++fromN1 === 3) stopServing(n1);
    });
    s.start();
    await waitFor('the primary to fail', () => (s.progress().transfers[0]!.sources['n1']?.failures ?? 0) > 0);
    expect(s.progress().transfers[0]!.fallbacksActive).toBe(false);
    dead.add('n1');
    await s.whenComplete();
    const t = s.progress().transfers[0]!;
    expect(t.done).toBe(true);
    expect(t.fallbacksActive).toBe(true);
    expect(t.sources['n1']).toMatchObject({ role: 'primary', done: false });
    expect(t.sources['n2']).toMatchObject({ role: 'fallback', done: true });
    expect(t.sources['n3']).toMatchObject({ role: 'fallback', done: true });
    expect(contents(h.receiver.repo, half.startExclusive, half.endInclusive)).toEqual(contents(h.sources.get('n2')!.repo, half.startExclusive, half.endInclusive));
  });

  it('(d) a source refusal is FAILED_PRECONDITION, and the streamer retries instead of marking the transfer done; bad requests are INVALID_ARGUMENT', async () => {
    const records = dataset(new Rng(seed + 4), 1_000, 500);
    const h = await startHarness(['n1'], records);
    const n1 = h.sources.get('n1')!;
    n1.refusal = (request) => `epoch ${request.epoch} is not adjacent to this node's epoch 9: catch up first`;
    const channel = createChannel(`127.0.0.1:${n1.port}`);
    h.channels.push(channel);
    const client = createClient(PeerServiceDefinition, channel);
    const ask = (request: Partial<FetchRangeRequest>) =>
      client.fetchRange({ fromNodeId: 'n4', epoch: 2n, changeId: 1n, ...half, after: Buffer.alloc(0), maxBytes: 0n, ...request }, { signal: AbortSignal.timeout(5_000) });
    await expect(ask({})).rejects.toMatchObject({ code: Status.FAILED_PRECONDITION, details: "epoch 2 is not adjacent to this node's epoch 9: catch up first" });
    await expect(ask({ after: Buffer.from([1, 2, 3]) })).rejects.toMatchObject({ code: Status.INVALID_ARGUMENT, details: expect.stringMatching(/after is 3 bytes, not a cursor .*or empty to start the interval over/) });
    const wrongHash = Buffer.concat([Buffer.from([0xd0, 0, 0, 0]), Buffer.from('some-key')]);
    await expect(ask({ after: wrongHash })).rejects.toMatchObject({ code: Status.INVALID_ARGUMENT, details: expect.stringMatching(/after is not a hash-index key: its hash d0000000 is not the hash of its key/) });
    const outside = n1.repo.recordsInHashInterval(0x40000000, 0xc0000000)[0]!.key;
    const outsideCursor = Buffer.concat([Buffer.alloc(4), outside]);
    outsideCursor.writeUInt32BE(murmur3x86_32(outside, 0));
    await expect(ask({ after: outsideCursor })).rejects.toMatchObject({ code: Status.INVALID_ARGUMENT, details: expect.stringMatching(/outside the asked interval \(c0000000, 40000000\]/) });
    await expect(ask({ changeId: 0n })).rejects.toMatchObject({ code: Status.INVALID_ARGUMENT, details: expect.stringMatching(/change_id 0/) });
    await expect(ask({ fromNodeId: 'n9' })).rejects.toMatchObject({ code: Status.INVALID_ARGUMENT, details: expect.stringMatching(/"n9" is not a member/) });

    const s = streamer(h, [{ id: 'c0000000', ...half, primary: 'n1', fallbacks: [] }], { batchMaxBytes: 8 * 1024, retryDelayMaxMs: 200 }, seed);
    s.start();
    const refused = await waitFor('three refused attempts', () => {
      const source = s.progress().transfers[0]!.sources['n1']!;
      return source.failures >= 3 && source;
    });
    expect(refused.lastError).toBe("FAILED_PRECONDITION: epoch 2 is not adjacent to this node's epoch 9: catch up first");
    expect(refused).toMatchObject({ done: false, keys: 0 });
    expect(s.isComplete()).toBe(false);
    expect(h.receiver.repo.transferCursorNames('')).toEqual([]);
    expect(h.receiver.repo.recordCounts().records).toBe(0);

    n1.refusal = undefined;
    await s.whenComplete();
    expect(s.progress().transfers[0]!.sources['n1']).toMatchObject({ done: true, failures: 0, lastError: undefined });
    expect(contents(h.receiver.repo, half.startExclusive, half.endInclusive)).toEqual(contents(n1.repo, half.startExclusive, half.endInclusive));
  });
});

describe('Repository.recordsInHashIntervalPage and transfer cursors', () => {
  const dirs: string[] = [];
  const repos: Repository[] = [];
  afterEach(async () => {
    for (const r of repos.splice(0)) await r.close();
    for (const d of dirs.splice(0)) removeTempDir(d);
  });
  const open = (dir: string) => {
    const repo = Repository.open({ dataDir: join(dir, 'data'), nodeId: 'n1', peers: ['n2'] });
    repos.push(repo);
    return repo;
  };
  const indexKey = (key: Buffer) => {
    const out = Buffer.alloc(4 + key.length);
    out.writeUInt32BE(murmur3x86_32(key, 0));
    key.copy(out, 4);
    return out;
  };
  /** Every page from `after` on, at `maxBytes` a page. */
  const allPages = (repo: Repository, s: number, e: number, maxBytes: number, after?: Buffer) => {
    const pages: ReturnType<Repository['recordsInHashIntervalPage']>[] = [];
    for (;;) {
      const page = repo.recordsInHashIntervalPage(s, e, after, maxBytes, recordFramingBytesMax);
      pages.push(page);
      if (page.done) return pages;
      after = page.next;
    }
  };
  const keysOf = (records: readonly StoredRecord[]) => records.map((r) => r.key.toString('latin1'));

  it('(e) pages a wrapping interval in hash order with an exclusive cursor, bounded in bytes, tombstones included', async () => {
    const dir = makeTempDir('kvstore-page-');
    dirs.push(dir);
    const repo = open(dir);
    const rng = new Rng(seed + 5);
    const records = dataset(rng, 800, 300);
    await repo.applyRecords(records);
    const hashes = records.map((r) => murmur3x86_32(r.key, 0));
    // Bounds on stored keys: the key hashing to `start` is left out, the one hashing to `end` is in.
    const sorted = [...hashes].sort((a, b) => a - b);
    const start = sorted[sorted.length - 40]!;
    const end = sorted[40]!;
    const expected = repo.recordsInHashInterval(start, end);
    expect(expected.length).toBeGreaterThan(70);
    const pages = allPages(repo, start, end, 600);
    const paged = pages.flatMap((p) => p.records);
    expect(keysOf(paged)).toEqual(keysOf(expected));
    expect(paged.map((r) => murmur3x86_32(r.key, 0))).not.toContain(start);
    expect(paged.map((r) => murmur3x86_32(r.key, 0))).toContain(end);
    expect(paged.some((r) => (r.record[0]! & 1) === 1)).toBe(true);
    // Hash order from start + 1 on, wrapping.
    const offsets = paged.map((r) => (murmur3x86_32(r.key, 0) - start - 1 + 2 ** 32) % 2 ** 32);
    expect(offsets).toEqual([...offsets].sort((a, b) => a - b));
    for (const [i, p] of pages.entries()) {
      if (p.records.length > 1) expect(bytesOf(p.records)).toBeLessThanOrEqual(600);
      expect(p.records.length, `page ${i}`).toBeGreaterThan(0);
      expect(p.done).toBe(i === pages.length - 1);
      expect(p.next).toEqual(indexKey(p.records[p.records.length - 1]!.key));
    }

    // The cursor is exclusive, and need not be stored any more.
    const k = 30;
    const afterK = repo.recordsInHashIntervalPage(start, end, indexKey(expected[k]!.key), 1);
    expect(keysOf(afterK.records)).toEqual([expected[k + 1]!.key.toString('latin1')]);
    const tombstone = encodeRecord({ version: { wallMs: Date.now() + 120_000, counter: 0, nodeId: 'n1' }, tombstone: true, value: Buffer.alloc(0) });
    await repo.applyRecords([{ key: expected[k]!.key, record: tombstone }]);
    expect(await repo.purgeExact([{ key: expected[k]!.key, header: tombstone }])).toBe(1);
    expect(keysOf(repo.recordsInHashIntervalPage(start, end, indexKey(expected[k]!.key), 1).records)).toEqual([expected[k + 1]!.key.toString('latin1')]);
    // After the last record: empty, done, next = the cursor.
    const lastCursor = indexKey(expected[expected.length - 1]!.key);
    expect(repo.recordsInHashIntervalPage(start, end, lastCursor, 1_000)).toEqual({ records: [], next: lastCursor, done: true });
    // A cursor outside the interval is refused.
    const outside = records.find((r) => !inInterval(r.key, start, end))!;
    expect(() => repo.recordsInHashIntervalPage(start, end, indexKey(outside.key), 1_000)).toThrow(RangeError);
    // One record larger than the bound still comes, alone.
    const one = repo.recordsInHashIntervalPage(start, end, undefined, 1);
    expect(one.records).toHaveLength(1);
    expect(one.done).toBe(false);
    // Equal bounds: the whole circle, from start + 1 on.
    const circle = allPages(repo, start, start, 4_096).flatMap((p) => p.records);
    expect(circle).toHaveLength(repo.recordCounts().records);
    expect(murmur3x86_32(circle[circle.length - 1]!.key, 0)).toBe(start);
    // A non-wrapping interval holding nothing: one empty page, done.
    const gap = sorted.findIndex((h, i) => i > 0 && h - sorted[i - 1]! > 2);
    expect(repo.recordsInHashIntervalPage(sorted[gap - 1]!, sorted[gap - 1]! + 1, undefined, 1_000)).toEqual({ records: [], next: undefined, done: true });
  });

  it('(e) transfer cursors are durable meta entries under transfer/, listed by prefix', async () => {
    const dir = makeTempDir('kvstore-cursor-');
    dirs.push(dir);
    let repo = open(dir);
    await repo.storeTransferCursor('1/a/n2', Buffer.from('{"x":1}'));
    await repo.storeTransferCursor('1/b/n3', Buffer.from('{"x":2}'));
    await repo.storeTransferCursor('12/a/n2', Buffer.from('{"x":3}'));
    expect(repo.transferCursorNames('1/')).toEqual(['1/a/n2', '1/b/n3']);
    expect(repo.transferCursorNames('1/a/')).toEqual(['1/a/n2']);
    expect(repo.transferCursorNames('')).toEqual(['1/a/n2', '1/b/n3', '12/a/n2']);
    expect(repo.transferCursor('1/b/n3')?.toString()).toBe('{"x":2}');
    expect(repo.transferCursor('1/c/n3')).toBeUndefined();
    await repo.storeTransferCursor('1/b/n3', undefined);
    await repos.pop()!.close();
    repo = open(dir);
    expect(repo.transferCursorNames('')).toEqual(['1/a/n2', '12/a/n2']);
    expect(repo.transferCursor('12/a/n2')?.toString()).toBe('{"x":3}');
    // Other meta entries are not cursors.
    expect(repo.membershipBytes()).toBeUndefined();
  });
});
