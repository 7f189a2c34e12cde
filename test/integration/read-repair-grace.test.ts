import { afterEach, expect, it } from 'vitest';
import { RequestDeadline } from '../../src/replication/deadline.js';
import { encodeRecord } from '../../src/storage/record-codec.js';
import { InProcessCores } from '../helpers/in-process-cores.js';
import { waitFor } from '../helpers/wait.js';

/**
 * Read repair of the coordinator's own copy follows the rule a peer applies to a repair
 * (src/replication/coordinator.ts, repairStale): a record older than tombstones.graceSeconds for
 * a key this node does not hold is not stored. Otherwise a tombstone read from a replica that GC
 * had not reached yet came back on the coordinator alone after the others purged it. Two real
 * replication cores (real LMDB, gRPC peer links on 127.0.0.1), replication factor 2: both hold
 * every key; n1 coordinates the reads, n2 holds the newer records.
 */

const graceSeconds = 60;
const requestMs = 10_000;

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const tombstoneAt = (wallMs: number) => encodeRecord({ version: { wallMs, counter: 0, nodeId: 'n2' }, tombstone: true, value: Buffer.alloc(0) });

it('a read stores on the coordinator a recent tombstone it lacks and one over a copy it holds, but not a tombstone older than the grace for a key it does not hold', async () => {
  const cores = await InProcessCores.start({ ids: ['n1', 'n2'], replicationFactor: 2, config: { tombstones: { graceSeconds } } });
  cleanups.push(() => cores.stop());
  const [n1, n2] = [cores.core('n1'), cores.core('n2')];
  const now = Date.now();
  const oldMissing = { key: Buffer.from('old-tombstone-not-held'), record: tombstoneAt(now - 2 * graceSeconds * 1000) };
  const oldHeld = { key: Buffer.from('old-tombstone-over-a-held-value'), record: tombstoneAt(now - 2 * graceSeconds * 1000) };
  const recent = { key: Buffer.from('recent-tombstone-not-held'), record: tombstoneAt(now - 1_000) };
  await n2.repo.applyRecords([oldMissing, oldHeld, recent]);
  // n1 holds an older value of one key: a key held here is repaired whatever the record's age.
  const olderValue = encodeRecord({ version: { wallMs: now - 3 * graceSeconds * 1000, counter: 0, nodeId: 'n1' }, tombstone: false, value: Buffer.from('v') });
  await n1.repo.applyRecords([{ key: oldHeld.key, record: olderValue }]);

  const repairsBefore = n1.coordinator.counters.readRepairs;
  for (const { key } of [oldMissing, oldHeld, recent]) {
    const read = await n1.coordinator.read(key, 'all', new RequestDeadline(new AbortController().signal, requestMs));
    expect(read.found, key.toString()).toBe(false);
  }
  // Each read found n2's record newer than n1's copy and repaired n1 (locally, in the background).
  expect(n1.coordinator.counters.readRepairs - repairsBefore).toBe(3);
  // The repairs are applied in order (one write queue): once the last read's is stored, the others are settled.
  await waitFor('the recent tombstone repaired onto n1', () => n1.repo.getRecord(recent.key)?.equals(recent.record));
  expect(n1.repo.getRecord(oldHeld.key)?.equals(oldHeld.record), 'the old tombstone over the value n1 held').toBe(true);
  expect(n1.repo.getRecord(oldMissing.key), 'the tombstone older than the grace, which n1 did not hold').toBeUndefined();
  // n2's copies are untouched by the reads.
  for (const { key, record } of [oldMissing, oldHeld, recent]) expect(n2.repo.getRecord(key)?.equals(record), key.toString()).toBe(true);
});
