import { afterEach, expect, it } from 'vitest';
import { type MembershipState, proposeChange, seedMembership } from '../../src/cluster/membership.js';
import type { NodeCore } from '../../src/server/node-core.js';
import { encodeRecord } from '../../src/storage/record-codec.js';
import type { StorageFaults } from '../../src/storage/repository.js';
import { InProcessCores } from '../helpers/in-process-cores.js';

/**
 * The tombstone sweeper purges its own copy last, and only where every other replica purged
 * (src/replication/tombstone-gc.ts): a replica whose purge call failed, or that answered it
 * purged fewer than it was sent, may still hold the tombstone, and the sweeper's own copy is what
 * a later step starts from. Two real replication cores (real LMDB, gRPC peer links on
 * 127.0.0.1), replication factor 2; n1 sweeps (one step, called by the test), n2 is the other
 * replica. A replica keeps tombstones of ranges its own view has moving (replica.ts): n2 knowing
 * of an add that n1 has not committed yet is a replica that confirms every tombstone and then
 * purges only some.
 *
 * The third test fails the other replica's purge call itself (its storage refuses the commit).
 * The fourth is the sweeper's own epoch check: a change it learns of while its confirms are
 * on the wire ends the step with nothing purged anywhere.
 *
 * A peer that is down or cut off cannot show this: it fails ConfirmTombstones first, and a step
 * with an unconfirmed member purges nothing anywhere, with or without the rule.
 */

const graceSeconds = 60;
const ids = ['n1', 'n2'];

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function startCores(storedMembership?: (id: string) => MembershipState | undefined, storageFaults?: (id: string) => StorageFaults | undefined): Promise<{ n1: NodeCore; n2: NodeCore }> {
  const cores = await InProcessCores.start({
    ids,
    replicationFactor: 2,
    config: { tombstones: { graceSeconds } },
    ...(storedMembership === undefined ? {} : { storedMembership }),
    ...(storageFaults === undefined ? {} : { storageFaults }),
  });
  cleanups.push(() => cores.stop());
  return { n1: cores.core('n1'), n2: cores.core('n2') };
}

/** Tombstones older than the grace, of keys n1 sweeps (their first replica), stored on both replicas. */
async function oldTombstonesSweptByN1(n1: NodeCore, n2: NodeCore) {
  const ring = n1.membership.view().readRing;
  const keys = Array.from({ length: 400 }, (_, i) => Buffer.from(`k${i}`)).filter((key) => ring.preferenceList(key, 2)[0] === 'n1');
  const record = encodeRecord({ version: { wallMs: Date.now() - 2 * graceSeconds * 1000, counter: 0, nodeId: 'n1' }, tombstone: true, value: Buffer.alloc(0) });
  const tombstones = keys.map((key) => ({ key, record }));
  for (const node of [n1, n2]) await node.repo.applyRecords(tombstones);
  return tombstones;
}

const heldBy = (node: NodeCore, keys: readonly Buffer[]) => keys.filter((key) => node.repo.getRecordHeader(key) !== undefined).map(String);

it('a sweep step purges its own copy of the tombstones every other replica purged', async () => {
  const { n1, n2 } = await startCores();
  const tombstones = await oldTombstonesSweptByN1(n1, n2);
  expect(tombstones.length).toBeGreaterThan(20);
  const keys = tombstones.map((t) => t.key);

  expect(await n1.tombstones.step()).toBe(tombstones.length);
  expect(heldBy(n2, keys)).toEqual([]);
  expect(heldBy(n1, keys)).toEqual([]);
});

it('a sweep step keeps its own copy of the tombstones it sent to a replica that purged fewer than it was sent', async () => {
  // n2 has committed the add of n4 (epoch 2, its ranges moving); n1 is still at epoch 1.
  const seed = seedMembership(ids.map((id) => ({ id, peer: `${id}:1` })));
  const adding = proposeChange(seed, { kind: 'add', id: 'n4', peer: 'n4:1' }, 2);
  if (!('state' in adding)) throw new Error(adding.refusal);
  const { n1, n2 } = await startCores((id) => (id === 'n2' ? adding.state : undefined));
  const n2View = n2.membership.view();
  expect(n2View.epoch).toBe(n1.membership.view().epoch + 1);
  const tombstones = await oldTombstonesSweptByN1(n1, n2);
  const keys = tombstones.map((t) => t.key);
  const moving = keys.filter((key) => n2View.isMovingHash(n2View.readRing.hashKey(key)));
  const staying = keys.filter((key) => !n2View.isMovingHash(n2View.readRing.hashKey(key)));
  expect(moving.length).toBeGreaterThan(0);
  expect(staying.length).toBeGreaterThan(0);

  const purged = await n1.tombstones.step();
  // n2 confirmed them all, purged those its view does not have moving and kept the others.
  expect(heldBy(n2, staying)).toEqual([]);
  expect(heldBy(n2, moving)).toEqual(moving.map(String));
  // Its answer counted fewer than it was sent: n1 keeps every tombstone of that call, so a later step confirms and purges them again.
  expect(heldBy(n1, keys)).toEqual(keys.map(String));
  expect(purged).toBe(0);
});

it('a sweep step keeps its own copy of the tombstones whose purge call to a replica failed, and a later step purges them', async () => {
  // n2 confirms and then fails its purge: the purge's write transaction cannot commit (as on a
  // full disk), so the call fails and n2 still holds every tombstone; n1 must keep its own.
  // Once armed, n2's first transaction is the confirm's (it stores any tombstone it lacks: here
  // none) and passes; the next, the purge's, fails. Nothing else writes on n2 meanwhile (the
  // cores run no background services).
  let armed = false;
  let passBeforeFailing = 0;
  let failedCommits = 0;
  const failingN2: StorageFaults = {
    failJob: () => false,
    failCommit: () => {
      if (!armed) return false;
      if (passBeforeFailing > 0) {
        passBeforeFailing--;
        return false;
      }
      failedCommits++;
      return true;
    },
  };
  const { n1, n2 } = await startCores(undefined, (id) => (id === 'n2' ? failingN2 : undefined));
  const tombstones = await oldTombstonesSweptByN1(n1, n2);
  const keys = tombstones.map((t) => t.key);

  armed = true;
  passBeforeFailing = 1;
  expect(await n1.tombstones.step()).toBe(0);
  expect(failedCommits).toBe(1);
  expect(heldBy(n2, keys)).toEqual(keys.map(String));
  expect(heldBy(n1, keys)).toEqual(keys.map(String));

  armed = false;
  expect(await n1.tombstones.step()).toBe(tombstones.length);
  expect(heldBy(n2, keys)).toEqual([]);
  expect(heldBy(n1, keys)).toEqual([]);
});

it('a sweep step that sees the membership epoch change during its confirms purges nothing, on any replica', async () => {
  // Both start at epoch 1. n1 adopts an add of n4 while its confirm to n2 is on the wire: a
  // joiner may already have read these tombstones into a stream page, so none may be purged by
  // this step (n2, still at epoch 1, would purge every one it was sent).
  const { n1, n2 } = await startCores();
  const tombstones = await oldTombstonesSweptByN1(n1, n2);
  const keys = tombstones.map((t) => t.key);
  const seed = n1.membership.current();
  const adding = proposeChange(seed, { kind: 'add', id: 'n4', peer: 'n4:1' }, 2); // replication factor 2
  if (!('state' in adding)) throw new Error(adding.refusal);

  const step = n1.tombstones.step();
  await n1.membership.adopt(adding.state); // persisted synchronously: done before n2's answer arrives
  expect(n1.membership.view().epoch).toBe(seed.epoch + 1);
  expect(await step).toBe(0);
  expect(heldBy(n2, keys)).toEqual(keys.map(String));
  expect(heldBy(n1, keys)).toEqual(keys.map(String));
});
