import { describe, expect, it } from 'vitest';
import { MemberState, type StatusResponse } from '../../gen/kvstore/v1/kvstore.js';
import { type NodeCounters, NodeMetrics, type NodeSnapshot } from '../../src/server/metrics.js';

/** A node's state as a scrape reads it: `self` and its peers. */
function snapshot(self: string, peers: readonly string[]): NodeSnapshot {
  const member = (id: string, isSelf: boolean) => ({
    nodeId: id,
    state: MemberState.MEMBER_STATE_NORMAL,
    ownedShare: 1 / 3,
    dead: false,
    peer: '',
    self: isSelf,
    reachable: true,
    backlogEntries: 3n,
    backlogBytes: 300n,
    backlogOldestAgeMs: 1500n,
    lastContactUnixMs: 1_000_000n,
    droppedEntries: 0n,
    lastExchangeUnixMs: 0n,
    lastExchangeRepaired: 0n,
    lastExchangeError: '',
  });
  const status: StatusResponse = {
    nodeId: self,
    uptimeSeconds: 1,
    keyCount: 2n,
    recordCount: 3n,
    replicationFactor: 3,
    listen: '',
    dataDir: '',
    version: '0.1.0',
    warnings: [],
    redacted: false,
    membershipEpoch: 1n,
    tombstonesPurged: 0n,
    tombstoneGcHeldBack: '',
    membershipChange: '',
    membershipChangeProgress: undefined,
    members: [member(self, true), ...peers.map((p) => member(p, false))],
  };
  const counters: NodeCounters = {
    deliveredByPeer: new Map(peers.map((p) => [p, 7])),
    readRepairs: 0,
    operationStreams: { open: 0, inFlight: 0, answered: 0 },
    budget: { inFlightBytes: 0, maxBytes: 100, refused: 0, waited: 0 },
    running: { count: 0, max: 128, waited: 0 },
    safety: { restampedWrites: 0, versionCollisions: 0, unhandledRejections: 0, tombstonesPurged: 0, refusedByPeer: new Map(), notReplicatedByPeer: new Map(), retargetedEntries: 0, lateRequestsRefused: 0 },
  };
  return { status, counters };
}

describe('NodeMetrics', () => {
  it('gives several nodes in one process their own registries, sharing the process metrics', async () => {
    const a = new NodeMetrics(() => snapshot('a', ['b', 'c']), ['b', 'c']);
    const b = new NodeMetrics(() => snapshot('b', ['a', 'c']), ['a', 'c']);
    a.observeDelivery('b', { entries: 4, durationMs: 2 });
    a.observeCommit({ records: 5, durationMs: 1, failed: false });
    a.observeCommit({ records: 1, durationMs: 1, failed: true });
    a.observeExchange({ peer: 'c', rangesCompared: 1, rangesDiffering: 1, pulled: 2, pushed: 1, finishedAtMs: 0, error: undefined, bytes: 0, durationMs: 250 });
    const pageA = await a.render();
    const pageB = await b.render();
    expect(pageA).toMatch(/^kvstore_info\{node_id="a",version="0.1.0"\} 1$/m);
    expect(pageB).toMatch(/^kvstore_info\{node_id="b",version="0.1.0"\} 1$/m);
    expect(pageA).toMatch(/^kvstore_replication_delivered_entries_total\{peer="b"\} 7$/m);
    expect(pageA).toMatch(/^kvstore_replication_backlog_oldest_age_seconds\{peer="c"\} 1.5$/m);
    // Histograms fed by observers: only a's.
    expect(pageA).toMatch(/^kvstore_replication_delivery_duration_seconds_count\{peer="b"\} 1$/m);
    expect(pageA).toMatch(/^kvstore_replication_delivery_duration_seconds_count\{peer="c"\} 0$/m);
    expect(pageA).toMatch(/^kvstore_replication_delivery_batch_entries_sum\{peer="b"\} 4$/m);
    expect(pageB).toMatch(/^kvstore_replication_delivery_duration_seconds_count\{peer="a"\} 0$/m);
    expect(pageA).toMatch(/^kvstore_storage_commit_records_sum 5$/m);
    expect(pageA).toMatch(/^kvstore_storage_commit_failures_total 1$/m);
    expect(pageB).toMatch(/^kvstore_storage_commit_failures_total 0$/m);
    expect(pageA).toMatch(/^kvstore_anti_entropy_exchange_duration_seconds_sum\{peer="c",result="ok"\} 0.25$/m);
    expect(pageA).toMatch(/^kvstore_anti_entropy_repaired_records_total\{peer="c",direction="pulled"\} 2$/m);
    expect(pageA).toMatch(/^kvstore_membership_epoch 1$/m);
    expect(pageA).toMatch(/^kvstore_tombstone_gc_held_back 0$/m);
    const held = snapshot('c', ['a', 'b']);
    const heldBack = new NodeMetrics(() => ({ ...held, status: { ...held.status, tombstoneGcHeldBack: 'a did not confirm (UNAVAILABLE)' } }), ['a', 'b']);
    expect(await heldBack.render()).toMatch(/^kvstore_tombstone_gc_held_back 1$/m);
    // The process's metrics on both pages, once each.
    for (const page of [pageA, pageB]) {
      expect(page.match(/^# TYPE nodejs_eventloop_lag_seconds gauge$/gm)).toHaveLength(1);
      expect(page).toMatch(/^# TYPE nodejs_gc_duration_seconds histogram$/m);
      expect(page).toMatch(/^nodejs_heap_size_used_bytes \d+/m);
    }
  });

  it('renders a scrape that fails to read the node as a rejection (the endpoint answers 500)', async () => {
    const metrics = new NodeMetrics(() => {
      throw new Error('not started');
    }, []);
    await expect(metrics.render()).rejects.toThrow(/not started/);
  });
});
