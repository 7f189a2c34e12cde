import { describe, expect, it } from 'vitest';
import { Rng } from '../../src/common/rng.js';
import { type AcceptorState, type Ballot, onAccept, onCommit, onPrepare, type PrepareReply, quorumOf, valueToPropose } from '../../src/cluster/membership-agreement.js';
import { type MembershipState, proposeChange, seedMembership } from '../../src/cluster/membership.js';

/**
 * The agreement of docs/membership.md §2.2 under a seeded message model: proposers racing
 * different changes for the same epoch, messages reordered, lost and duplicated, proposers
 * retrying with higher ballots. Invariant A (§2.3): at most one state is chosen for the epoch,
 * and every member that commits one commits that one. Seeds 1-300 (KVSTORE_TEST_AGREEMENT_SEED
 * runs one).
 */
type Message =
  | { kind: 'prepare'; to: string; from: string; ballot: Ballot; round: number }
  | { kind: 'promise'; to: string; from: string; reply: PrepareReply; round: number }
  | { kind: 'accept'; to: string; from: string; ballot: Ballot; state: MembershipState; round: number }
  | { kind: 'accepted'; to: string; from: string; ok: boolean; round: number; promisedCounter: number }
  | { kind: 'commit'; to: string; state: MembershipState };

function runModel(seed: number): { chosen: MembershipState[]; committed: MembershipState[] } {
  const rng = new Rng(seed);
  const base = seedMembership(['n1', 'n2', 'n3', 'n4', 'n5'].map((id, i) => ({ id, peer: `10.0.0.${i + 1}:7000` })));
  const acceptors = new Map<string, AcceptorState>(base.members.map((m) => [m.id, { committed: base }]));
  // Three proposers each want a different change for epoch 2.
  const wants = new Map<string, MembershipState>(
    (['n1', 'n2', 'n3'] as const).map((id, i) => {
      const result = proposeChange(base, { kind: 'remove', id: `n${i + 3}` }, 3);
      if (!('state' in result)) throw new Error(result.refusal);
      return [id, result.state];
    }),
  );
  const proposers = new Map([...wants.keys()].map((id) => [id, { round: 0, counter: 0, promises: [] as PrepareReply[], accepts: 0, failed: false, proposing: undefined as MembershipState | undefined, waiting: 0 }]));
  const queue: Message[] = [];
  const chosen: MembershipState[] = [];
  const dropRate = rng.nextInt(30) / 100;
  const quorum = quorumOf(base, base);
  const start = (id: string) => {
    const p = proposers.get(id)!;
    p.round++;
    p.counter++;
    p.promises = [];
    p.accepts = 0;
    p.failed = false;
    p.waiting = quorum.length;
    for (const to of quorum) queue.push({ kind: 'prepare', to, from: id, ballot: { counter: p.counter, proposer: id }, round: p.round });
  };
  for (const id of proposers.keys()) start(id);
  const settle = (id: string) => {
    const p = proposers.get(id)!;
    if (p.waiting > 0) return;
    if (p.failed) {
      if (p.round < 12) start(id);
      return;
    }
    if (p.proposing === undefined) {
      // Phase 1 done: every member promised.
      p.proposing = valueToPropose(p.promises, wants.get(id)!);
      p.waiting = quorum.length;
      for (const to of quorum) queue.push({ kind: 'accept', to, from: id, ballot: { counter: p.counter, proposer: id }, state: p.proposing, round: p.round });
    } else {
      chosen.push(p.proposing);
      // A third of the time the proposer dies right after the value is chosen: no commit is sent,
      // and the others must finish its change, not theirs.
      if (rng.nextInt(3) > 0) for (const to of quorum) queue.push({ kind: 'commit', to, state: p.proposing });
      p.round = Number.POSITIVE_INFINITY; // done
    }
  };
  for (let steps = 0; steps < 20_000 && queue.length > 0; steps++) {
    const message = queue.splice(rng.nextInt(queue.length), 1)[0]!;
    // Commits are lost too: a member that missed one still holds what it accepted.
    const lost = rng.nextDouble() < dropRate;
    if (!lost && message.kind !== 'commit' && rng.nextDouble() < 0.05) queue.push({ ...message }); // duplicated
    switch (message.kind) {
      case 'prepare':
      case 'accept': {
        const p = proposers.get(message.from)!;
        if (lost) {
          if (p.round === message.round) {
            p.failed = true;
            p.waiting--;
            settle(message.from);
          }
          break;
        }
        const acceptor = acceptors.get(message.to)!;
        if (message.kind === 'prepare') {
          const { acceptor: next, reply } = onPrepare(acceptor, 2, message.ballot);
          acceptors.set(message.to, next);
          queue.push({ kind: 'promise', to: message.from, from: message.to, reply, round: message.round });
        } else {
          const { acceptor: next, reply } = onAccept(acceptor, message.ballot, message.state);
          acceptors.set(message.to, next);
          queue.push({ kind: 'accepted', to: message.from, from: message.to, ok: reply.kind === 'accepted', round: message.round, promisedCounter: reply.kind === 'refused' ? (reply.promised?.counter ?? 0) : 0 });
        }
        break;
      }
      case 'promise':
      case 'accepted': {
        const p = proposers.get(message.to)!;
        if (p.round !== message.round || p.waiting === 0) break; // a late or duplicated answer
        p.waiting--;
        if (lost) p.failed = true;
        else if (message.kind === 'promise') {
          if (message.reply.kind === 'promise') p.promises.push(message.reply);
          else {
            p.failed = true;
            p.counter = Math.max(p.counter, message.reply.promised?.counter ?? 0);
          }
        } else if (!message.ok) {
          p.failed = true;
          p.counter = Math.max(p.counter, message.promisedCounter);
        }
        if (p.failed) p.proposing = undefined;
        settle(message.to);
        break;
      }
      case 'commit':
        if (lost) break;
        acceptors.set(message.to, onCommit(acceptors.get(message.to)!, message.state).acceptor);
        break;
    }
  }
  const committed = [...acceptors.values()].map((a) => a.committed).filter((s) => s.epoch === 2);
  return { chosen, committed };
}

describe('membership agreement (single-decree Paxos per epoch, quorum every member)', () => {
  const one = process.env.KVSTORE_TEST_AGREEMENT_SEED;
  const seeds = one === undefined ? Array.from({ length: 300 }, (_, i) => i + 1) : [Number(one)];
  it(`at most one state is chosen for an epoch, and it is the one every member commits (seeds ${seeds[0]}-${seeds.at(-1)})`, () => {
    let decided = 0;
    let contested = 0;
    for (const seed of seeds) {
      const { chosen, committed } = runModel(seed);
      const distinct = new Set(chosen.map((s) => JSON.stringify(s)));
      expect(distinct.size, `seed ${seed}: ${[...distinct].join(' | ')}`).toBeLessThanOrEqual(1);
      for (const state of committed) expect(JSON.stringify(state), `seed ${seed}`).toBe([...distinct][0]);
      if (distinct.size === 1) decided++;
      if (chosen.length > 1) contested++;
    }
    // Not vacuous: many seeds decide (with up to 30% of messages lost and every member needed,
    // many run out of rounds: liveness is not what this checks), and some are chosen again by a
    // later proposer that found the state accepted (its proposer died), the case adoption is for.
    if (one === undefined) {
      expect(decided).toBeGreaterThan(seeds.length / 4);
      expect(contested).toBeGreaterThan(seeds.length / 20);
    }
  });

  it('a proposer that learns of an accepted state proposes it, not its own', () => {
    const base = seedMembership([{ id: 'n1', peer: 'a:1' }, { id: 'n2', peer: 'b:2' }, { id: 'n3', peer: 'c:3' }, { id: 'n4', peer: 'd:4' }]);
    const mine = (proposeChange(base, { kind: 'remove', id: 'n4' }, 3) as { state: MembershipState }).state;
    const theirs = (proposeChange(base, { kind: 'remove', id: 'n3' }, 3) as { state: MembershipState }).state;
    const low = { counter: 1, proposer: 'n2' };
    const high = { counter: 2, proposer: 'n1' };
    expect(valueToPropose([{ kind: 'promise' }, { kind: 'promise', accepted: { ballot: low, state: theirs } }], mine)).toBe(theirs);
    expect(valueToPropose([{ kind: 'promise', accepted: { ballot: high, state: mine } }, { kind: 'promise', accepted: { ballot: low, state: theirs } }], theirs)).toBe(mine);
    expect(valueToPropose([{ kind: 'promise' }], mine)).toBe(mine);
    // An acceptor refuses a lower ballot after promising a higher one, and a state for another epoch.
    const acceptor: AcceptorState = { committed: base };
    const promised = onPrepare(acceptor, 2, high).acceptor;
    expect(onPrepare(promised, 2, low).reply.kind).toBe('refused');
    expect(onAccept(promised, low, mine).reply.kind).toBe('refused');
    expect(onPrepare(acceptor, 3, high).reply).toMatchObject({ kind: 'refused', reason: 'this member is at epoch 1, the proposal is for epoch 3' });
  });
});
