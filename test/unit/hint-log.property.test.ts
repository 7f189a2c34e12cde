import { join } from 'node:path';
import fc from 'fast-check';
import { ABORT, open as openLmdb } from 'lmdb';
import { describe, expect, it } from 'vitest';
import { HintLog, type ReservedEntries, noRemovals } from '../../src/storage/hint-log.js';
import { encodeRecord } from '../../src/storage/record-codec.js';
import { makeTempDir, removeTempDir } from '../helpers/node-process.js';

/**
 * The replication log's bookkeeping under any interleaving of what the node does with it:
 * reserve entries (a coordinated write), write them in a transaction that commits or aborts,
 * deliver (read + remove, as an acknowledged batch) possibly before the entries are written, and
 * drain deletions in a transaction of its own. Real LMDB, transactions really aborted. Checked
 * against a model after every step, and at the end: once everything is written, delivered and
 * drained, LMDB holds no entry (nothing resurrected, nothing leaked), and a reopen agrees.
 */

type Op =
  | { readonly kind: 'reserve' }
  | { readonly kind: 'write'; readonly count: number; readonly commit: boolean }
  | { readonly kind: 'deliver'; readonly max: number }
  | { readonly kind: 'drain' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.constant<Op>({ kind: 'reserve' }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('write' as const), count: fc.integer({ min: 1, max: 4 }), commit: fc.boolean() }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('deliver' as const), max: fc.integer({ min: 1, max: 5 }) }) },
  { weight: 1, arbitrary: fc.constant<Op>({ kind: 'drain' }) },
);

const peer = 'n2';
const unlimited = Number.MAX_SAFE_INTEGER;

describe('HintLog bookkeeping (model-based, real LMDB)', () => {
  it('counts, hands out and deletes exactly the entries the model says, for any interleaving', () => {
    const dir = makeTempDir('kvstore-hintlog-prop-');
    let run = 0;
    try {
      fc.assert(
        fc.property(fc.array(opArb, { maxLength: 60 }), (ops) => {
          const env = openLmdb({ path: join(dir, `run-${run++}.mdb`), maxDbs: 2 });
          try {
            const db = env.openDB<Buffer, Buffer>({ name: 'hints', encoding: 'binary', keyEncoding: 'binary' });
            const log = new HintLog(db, [peer]);
            /** seq -> what happened to it. */
            const model = new Map<number, 'reserved' | 'written' | 'phantom'>();
            let delivered = 0; // the delivery loop's position
            let pending: ReservedEntries[] = []; // reserved, waiting for their transaction, in order
            let nextValue = 0;

            const transaction = (body: () => void, commit: boolean) => {
              let drained = noRemovals;
              env.transactionSync(() => {
                body();
                drained = log.drainRemovalsInTransaction();
                return commit ? undefined : ABORT;
              });
              if (!commit) log.requeueRemovals(drained);
            };
            const live = () => [...model].filter(([seq, state]) => seq > delivered && state !== 'phantom').map(([seq]) => seq);

            const step = (op: Op) => {
              switch (op.kind) {
                case 'reserve': {
                  const i = nextValue++;
                  const record = encodeRecord({ version: { wallMs: 1 + i, counter: 0, nodeId: 'n1' }, tombstone: false, value: Buffer.from(`v${i}`) });
                  const reserved = log.reserve([peer], Buffer.from(`k${i}`), record, 1);
                  model.set(reserved.entries[0]!.seq, 'reserved');
                  pending.push(reserved);
                  break;
                }
                case 'write': {
                  const batch = pending.slice(0, op.count);
                  if (batch.length === 0) break;
                  pending = pending.slice(batch.length);
                  transaction(() => batch.forEach((r) => log.writeReservedInTransaction(r)), op.commit);
                  for (const r of batch) {
                    const seq = r.entries[0]!.seq;
                    if (!op.commit) log.discardReserved(r);
                    // A delivered entry stays delivered whatever its transaction did.
                    if (seq > delivered) model.set(seq, op.commit ? 'written' : 'phantom');
                  }
                  break;
                }
                case 'deliver': {
                  const batch = log.read(peer, delivered, op.max, unlimited);
                  if (batch.length === 0) break;
                  // What a loop may send: live entries, in order, from the first one on.
                  expect(batch.map((e) => e.seq)).toEqual(live().slice(0, batch.length));
                  delivered = batch[batch.length - 1]!.seq;
                  log.remove(batch);
                  break;
                }
                case 'drain':
                  transaction(() => undefined, true);
                  break;
              }
              // Counted: exactly the live entries.
              expect(log.stats(peer).entries).toBe(live().length);
            };

            for (const op of ops) step(op);
            // Finish: write what is pending, deliver everything, drain.
            if (pending.length > 0) step({ kind: 'write', count: pending.length, commit: true });
            for (let guard = 0; guard < 1000 && live().length > 0; guard++) step({ kind: 'deliver', max: 5 });
            expect(live()).toEqual([]);
            step({ kind: 'drain' });
            expect(log.stats(peer)).toMatchObject({ entries: 0, bytes: 0 });
            expect([...db.getKeys({})].length).toBe(0);
            expect(new HintLog(db, [peer]).stats(peer).entries).toBe(0);
          } finally {
            void env.close();
          }
        }),
        { numRuns: 150 },
      );
    } finally {
      removeTempDir(dir);
    }
  });
});
