import {
  type AcceptorRecord,
  type AcceptorState,
  type AcceptReply,
  type Ballot,
  compareBallots,
  decodeAcceptorRecord,
  encodeAcceptorRecord,
  isLegalTransition,
  onAccept,
  onPrepare,
  type PrepareReply,
} from '../cluster/membership-agreement.js';
import type { MembershipState } from '../cluster/membership.js';
import type { Repository } from '../storage/repository.js';

/**
 * This node's acceptor in the agreement on the next membership epoch (docs/membership.md §2.2):
 * the pure Paxos rules of src/cluster/membership-agreement.ts, with the promise and the accepted
 * state persisted before any answer leaves (a promise forgotten in a crash could let two states
 * be chosen for one epoch). Requests run one at a time, so persistence and state never
 * interleave. The committed state is not the acceptor's: `committed` holds it (the node's live
 * membership), and the acceptor adopts into it what was chosen.
 */

/** Where the acceptor's promise and acceptance are persisted (meta `membership/acceptor`). */
export interface AcceptorStore {
  load(): Uint8Array | undefined;
  /** Durable before it resolves; undefined deletes. */
  store(bytes: Uint8Array | undefined): Promise<void>;
}

/** The node's committed membership. */
export interface CommittedMembership {
  current(): MembershipState;
  /** Persists `state` as the membership document and makes it the node's view. */
  adopt(state: MembershipState): Promise<void>;
}

export interface MembershipAcceptorDeps {
  readonly store: AcceptorStore;
  readonly committed: CommittedMembership;
  /** The committed state of member `fromId` (GetMembership), for an acceptor that is behind. */
  fetchState(fromId: string): Promise<MembershipState>;
  /** Bounds a removal as proposeChange does (isLegalTransition); 1 when not given. */
  readonly replicationFactor?: number;
  /**
   * This member's own checks of a step before accepting it, beyond its legality: why it refuses,
   * or undefined. For §2.5 (its link to a member declared dead had no recent contact) and §4.1 (a
   * joiner's data dir), which need the node.
   */
  checkLocally?(committed: MembershipState, next: MembershipState): string | undefined;
}

/** An answer and the acceptor's committed epoch once it answered (a proposer behind learns from it). */
export interface PrepareAnswer {
  readonly reply: PrepareReply;
  readonly committedEpoch: number;
}

export interface AcceptAnswer {
  readonly reply: AcceptReply;
  readonly committedEpoch: number;
}

export interface CommitAnswer {
  /** True: the committed epoch is now at least the state's. */
  readonly adopted: boolean;
  readonly committedEpoch: number;
}

/** The store on a node's Repository. */
export function repositoryAcceptorStore(repo: Repository): AcceptorStore {
  return { load: () => repo.acceptorBytes(), store: (bytes) => repo.storeAcceptorBytes(bytes) };
}

export class MembershipAcceptor {
  /** What is persisted; `null` until first read from the store. */
  private record: AcceptorRecord | undefined | null = null;
  /** The end of the chain of requests (one runs at a time). */
  private tail: Promise<unknown> = Promise.resolve();

  constructor(private readonly deps: MembershipAcceptorDeps) {}

  /** The committed state (what GetMembership answers: never a proposed or accepted one). */
  current(): MembershipState {
    return this.deps.committed.current();
  }

  /**
   * The highest ballot counter this acceptor promised or accepted for the next epoch (0: none): a
   * proposer on this node starts above it, so none of its ballots is ever reused with another
   * state, even after a restart (its own acceptor is in every quorum it proposes to).
   */
  highestCounter(): number {
    const { promised, accepted } = this.acceptorState();
    return Math.max(promised?.counter ?? 0, accepted?.ballot.counter ?? 0);
  }

  /** Phase 1 for `epoch` (see MembershipPrepare in peer.proto). */
  prepare(fromId: string, epoch: number, ballot: Ballot): Promise<PrepareAnswer> {
    return this.serialized(async () => {
      const committedEpoch = this.current().epoch;
      if (epoch > committedEpoch + 1) {
        // This member is behind the proposer: catch up first, then evaluate.
        const problem = await this.catchUpFrom(fromId, epoch - 1);
        if (problem !== undefined) return { committedEpoch, reply: { kind: 'refused', reason: problem, committedEpoch } };
      }
      const before = this.acceptorState();
      const { acceptor, reply } = onPrepare(before, epoch, ballot);
      await this.persist(before, acceptor);
      return { reply, committedEpoch: acceptor.committed.epoch };
    });
  }

  /** Phase 2: accepts `state` if it is a legal step, this member's own checks pass and no higher ballot was promised. */
  accept(_fromId: string, ballot: Ballot, state: MembershipState): Promise<AcceptAnswer> {
    return this.serialized(async () => {
      const before = this.acceptorState();
      const committed = before.committed;
      if (state.epoch === committed.epoch + 1) {
        const problem = isLegalTransition(committed, state, this.deps.replicationFactor) ?? this.deps.checkLocally?.(committed, state);
        if (problem !== undefined) return { committedEpoch: committed.epoch, reply: { kind: 'refused', reason: problem, committedEpoch: committed.epoch } };
      }
      const { acceptor, reply } = onAccept(before, ballot, state);
      await this.persist(before, acceptor);
      return { reply, committedEpoch: committed.epoch };
    });
  }

  /**
   * A chosen state: adopted if it is the next epoch, answered as held if it is not newer. One
   * further ahead (this member missed commits) is adopted too, not fetched from the sender as
   * §2.2 step 4 put it: a Commit carries only a chosen state, the same the sender's GetMembership
   * would answer, so a fetch would add a round trip that can fail and no certainty.
   */
  commit(_fromId: string, state: MembershipState): Promise<CommitAnswer> {
    return this.serialized(async () => {
      const committedEpoch = this.current().epoch;
      if (state.epoch <= committedEpoch) return { adopted: true, committedEpoch };
      await this.adopt(state);
      return { adopted: true, committedEpoch: state.epoch };
    });
  }

  /**
   * Adopts a committed state newer than this member's (learned from a peer: a proposer told it is
   * behind, a Ping answering a higher epoch); false if it is not newer.
   */
  catchUp(state: MembershipState): Promise<boolean> {
    return this.serialized(async () => {
      if (state.epoch <= this.current().epoch) return false;
      await this.adopt(state);
      return true;
    });
  }

  /**
   * Fetches `fromId`'s committed state and adopts it if newer; why not, if it failed. Adopted
   * whether it is the next epoch or two or more ahead: GetMembership answers only committed
   * states, and a committed state is the only one ever chosen for its epoch (invariant A), so
   * jumping over the epochs between misses no decision. A member that far behind was not live
   * during them (invariant B: live members are within one epoch), so it served nothing on them.
   */
  private async catchUpFrom(fromId: string, wantedEpoch: number): Promise<string | undefined> {
    const committedEpoch = this.current().epoch;
    let fetched: MembershipState;
    try {
      fetched = await this.deps.fetchState(fromId);
    } catch (err) {
      return `this member is at epoch ${committedEpoch} and could not fetch epoch ${wantedEpoch} from ${fromId}: ${err instanceof Error ? err.message : String(err)}`;
    }
    if (fetched.epoch > committedEpoch) await this.adopt(fetched);
    return undefined;
  }

  /** Adopts a committed state, then forgets the promise and acceptance, which were for it or older. */
  private async adopt(state: MembershipState): Promise<void> {
    await this.deps.committed.adopt(state);
    if (this.loadRecord() !== undefined) {
      await this.deps.store.store(undefined);
      this.record = undefined;
    }
  }

  /** The pure acceptor state now: the persisted promise counts only while it is for the next epoch. */
  private acceptorState(): AcceptorState {
    const committed = this.current();
    const record = this.loadRecord();
    if (record === undefined || record.epoch !== committed.epoch + 1) return { committed };
    return { committed, ...(record.promised === undefined ? {} : { promised: record.promised }), ...(record.accepted === undefined ? {} : { accepted: record.accepted }) };
  }

  private loadRecord(): AcceptorRecord | undefined {
    if (this.record === null) {
      const bytes = this.deps.store.load();
      this.record = bytes === undefined ? undefined : decodeAcceptorRecord(bytes);
    }
    return this.record;
  }

  /** Persists what a rule changed, before the answer goes out; nothing when it changed nothing. */
  private async persist(before: AcceptorState, after: AcceptorState): Promise<void> {
    const same = (a: Ballot | undefined, b: Ballot | undefined) => (a === undefined ? b === undefined : b !== undefined && compareBallots(a, b) === 0);
    if (same(before.promised, after.promised) && before.accepted === after.accepted) return;
    const record: AcceptorRecord = {
      epoch: after.committed.epoch + 1,
      ...(after.promised === undefined ? {} : { promised: after.promised }),
      ...(after.accepted === undefined ? {} : { accepted: after.accepted }),
    };
    await this.deps.store.store(encodeAcceptorRecord(record));
    this.record = record;
  }

  /** Runs `work` after every request before it; a failed one does not stop the next. */
  private serialized<T>(work: () => Promise<T>): Promise<T> {
    const run = this.tail.then(work);
    this.tail = run.catch(() => {});
    return run;
  }
}
