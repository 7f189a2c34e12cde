import { ClientError, Status } from 'nice-grpc';
import type { PeerServiceClient } from '../../gen/kvstore/internal/v1/peer.js';
import { type Ballot, describeTransition, isLegalTransition, type PrepareReply, quorumOf, sameMembership, valueToPropose } from '../cluster/membership-agreement.js';
import type { MembershipState } from '../cluster/membership.js';
import { type Clock, sleep } from '../platform/clock.js';
import { ConcurrentMembershipChangeError, MembershipRefusedError, MembersUnreachableError, RequestTimeoutError } from './errors.js';
import type { AcceptAnswer, CommitAnswer, MembershipAcceptor, PrepareAnswer } from './membership-acceptor.js';
import { acceptAnswerFromMessage, ballotToMessage, commitAnswerFromMessage, membershipFromMessage, membershipToMessage, prepareAnswerFromMessage } from './membership-messages.js';

/**
 * Proposes the next membership epoch (docs/membership.md §2.2): prepare and accept with every
 * member of the quorum (quorumOf: every live member must agree), then commit everywhere. A
 * state someone else got accepted first is finished instead of ours (the Paxos rule) and
 * reported as a refusal; contention and silent members are retried with a higher ballot after a
 * jittered backoff until the deadline; a proposer that finds itself behind catches up and
 * builds its step again on the newer state.
 */

/** The calls of the peer service the agreement makes (the generated nice-grpc client's). */
export type MembershipPeerClient = Pick<PeerServiceClient, 'getMembership' | 'membershipPrepare' | 'membershipAccept' | 'membershipCommit'>;

/** The step to propose, built on the committed state; a refusal is answered as it is. */
export type BuildStep = (committed: MembershipState) => { state: MembershipState } | { refusal: string };

export interface MembershipProposerDeps {
  readonly selfId: string;
  /** This node's own acceptor, called directly (its committed state is this node's). */
  readonly acceptor: MembershipAcceptor;
  /** The connection to a member, if this node has one. */
  clientOf(id: string): MembershipPeerClient | undefined;
  readonly clock: Clock;
  /** Jitter of the retry backoff (seeded in tests and the simulator). */
  readonly rng: { next(): number };
  /** timeouts.peerCallMs: the deadline of each call. */
  readonly peerCallMs: number;
  /** As for the acceptors' legality check (isLegalTransition); 1 when not given. */
  readonly replicationFactor?: number;
}

/** First retry delay after a failed round; doubled per failure up to retryDelayMaxMs. */
const retryDelayInitialMs = 50;
const retryDelayMaxMs = 1000;
/** A delay is drawn from [this fraction, 1] of the current one, so racing proposers drift apart. */
const retryJitterFloor = 0.5;

/** One member's answer to one call, or why there is none. */
type Outcome<T> = { readonly id: string; readonly answer: T } | { readonly id: string; readonly error: string; readonly silent: boolean };

/** A failed round: who did not answer, who answered with an error or refused, the highest ballot counter heard of. */
interface Failure {
  readonly silent: readonly { id: string; error: string }[];
  readonly problems: readonly string[];
  readonly counterSeen: number;
}

type RoundResult =
  | { readonly kind: 'chosen'; readonly state: MembershipState }
  | { readonly kind: 'behind'; readonly memberId: string; readonly epoch: number }
  | { readonly kind: 'refused'; readonly message: string }
  | ({ readonly kind: 'failed' } & Failure);

/** Errors that mean "no answer came" (down, partitioned, too slow), not "it answered no". */
function isSilence(error: unknown): boolean {
  if (error instanceof ClientError) return error.code === Status.UNAVAILABLE || error.code === Status.DEADLINE_EXCEEDED || error.code === Status.CANCELLED;
  return error instanceof Error && (error.name === 'AbortError' || error.name === 'TimeoutError');
}

function messageOf(error: unknown): string {
  if (error instanceof ClientError) return `${Status[error.code]}: ${error.details}`;
  return error instanceof Error ? error.message : String(error);
}

/** A GetMembership of member `fromId`, as the acceptor's `fetchState` and a proposer that is behind use it. */
export function membershipFetcher(selfId: string, clientOf: (id: string) => MembershipPeerClient | undefined, clock: Clock, peerCallMs: number): (fromId: string) => Promise<MembershipState> {
  return async (fromId) => {
    const client = clientOf(fromId);
    if (client === undefined) throw new Error(`this node has no connection to ${fromId}`);
    const answer = await client.getMembership({ fromNodeId: selfId }, { signal: clock.timeoutSignal(peerCallMs) });
    return membershipFromMessage(answer.state, `the GetMembership answer of ${fromId}`);
  };
}

export class MembershipProposer {
  private readonly fetchState: (fromId: string) => Promise<MembershipState>;
  /**
   * The last ballot counter used, across proposals: a ballot must never carry two states, so
   * every round takes a new one (also above what this node's acceptor promised before a restart).
   */
  private lastCounter = 0;

  constructor(private readonly deps: MembershipProposerDeps) {
    this.fetchState = membershipFetcher(deps.selfId, (id) => deps.clientOf(id), deps.clock, deps.peerCallMs);
  }

  /**
   * Agrees on the step `build` makes of the committed state, as epoch committed + 1, within
   * `deadlineMs` (from now); answers the committed state. Throws MembershipRefusedError (the step
   * or a member refused it), ConcurrentMembershipChangeError (another step won the epoch),
   * MembersUnreachableError (members that must agree did not answer) or RequestTimeoutError.
   */
  async propose(build: BuildStep, deadlineMs: number): Promise<MembershipState> {
    const { clock, selfId } = this.deps;
    const endMs = clock.monotonicMs() + deadlineMs;
    let delayMs = retryDelayInitialMs;
    for (;;) {
      const committed = this.deps.acceptor.current();
      const built = build(committed);
      if ('refusal' in built) throw new MembershipRefusedError(built.refusal);
      const own = built.state;
      // Checked here too, so a wrong step fails at once rather than at every acceptor.
      const illegal = isLegalTransition(committed, own, this.deps.replicationFactor);
      if (illegal !== undefined) throw new MembershipRefusedError(illegal);
      const counter = Math.max(this.lastCounter, this.deps.acceptor.highestCounter()) + 1;
      this.lastCounter = counter;
      const result = await this.round(committed, own, { counter, proposer: selfId }, endMs);
      let failure: Failure;
      switch (result.kind) {
        case 'chosen':
          await this.commitEverywhere(committed, result.state);
          if (!sameMembership(result.state, own)) {
            throw new ConcurrentMembershipChangeError(`refused: ${describeTransition(committed, result.state)}, proposed at the same time, was completed instead`, result.state);
          }
          return result.state;
        case 'refused':
          throw new MembershipRefusedError(result.message);
        case 'behind': {
          // Build again on the newer state at once; only a catch-up that did not help waits.
          const problem = await this.catchUp(result.memberId);
          if (problem === undefined) continue;
          failure = { silent: [], problems: [problem], counterSeen: 0 };
          break;
        }
        case 'failed':
          failure = result;
          break;
      }
      this.lastCounter = Math.max(this.lastCounter, failure.counterSeen);
      const waitMs = delayMs * (retryJitterFloor + (1 - retryJitterFloor) * this.deps.rng.next());
      delayMs = Math.min(delayMs * 2, retryDelayMaxMs);
      if (clock.monotonicMs() + waitMs >= endMs) throw this.giveUp(committed, failure, deadlineMs);
      await sleep(clock, waitMs);
    }
  }

  /** One ballot's prepare and accept. */
  private async round(committed: MembershipState, own: MembershipState, ballot: Ballot, endMs: number): Promise<RoundResult> {
    const { selfId, acceptor } = this.deps;
    const epoch = committed.epoch + 1;
    const base = membershipToMessage(committed);
    const promises = await Promise.all(
      quorumOf(committed, own).map((id) =>
        this.call<PrepareAnswer>(id, endMs, () => acceptor.prepare(selfId, epoch, ballot), async (client, signal) =>
          prepareAnswerFromMessage(await client.membershipPrepare({ fromNodeId: selfId, epoch: BigInt(epoch), ballot: ballotToMessage(ballot), baseState: base }, { signal }), id),
        ),
      ),
    );
    const prepared = this.judge(committed, promises);
    if (prepared.kind !== 'ok') return prepared;
    const value = valueToPropose(
      prepared.answers.map((a) => a.reply as PrepareReply),
      own,
    );
    const message = membershipToMessage(value);
    const accepts = await Promise.all(
      quorumOf(committed, value).map((id) =>
        this.call<AcceptAnswer>(id, endMs, () => acceptor.accept(selfId, ballot, value), async (client, signal) =>
          acceptAnswerFromMessage(await client.membershipAccept({ fromNodeId: selfId, ballot: ballotToMessage(ballot), state: message }, { signal }), id),
        ),
      ),
    );
    const accepted = this.judge(committed, accepts);
    if (accepted.kind !== 'ok') {
      // A refusal that is neither contention nor an epoch apart is the member's verdict on the step.
      const verdict = accepted.kind === 'failed' ? accepted.verdicts[0] : undefined;
      if (verdict !== undefined) return { kind: 'refused', message: `${verdict.id} refused ${describeTransition(committed, value)}: ${verdict.reason}` };
      return accepted;
    }
    return { kind: 'chosen', state: value };
  }

  /** Every member answered yes, or the round's failure (a member ahead of us first). */
  private judge<T extends PrepareAnswer | AcceptAnswer>(
    committed: MembershipState,
    outcomes: readonly Outcome<T>[],
  ): { kind: 'ok'; answers: T[] } | { kind: 'behind'; memberId: string; epoch: number } | ({ kind: 'failed'; verdicts: { id: string; reason: string }[] } & Failure) {
    const ahead = outcomes.find((o) => 'answer' in o && o.answer.committedEpoch > committed.epoch);
    if (ahead !== undefined && 'answer' in ahead) return { kind: 'behind', memberId: ahead.id, epoch: ahead.answer.committedEpoch };
    const answers: T[] = [];
    const silent: { id: string; error: string }[] = [];
    const problems: string[] = [];
    const verdicts: { id: string; reason: string }[] = [];
    let counterSeen = 0;
    for (const o of outcomes) {
      if (!('answer' in o)) {
        if (o.silent) silent.push({ id: o.id, error: o.error });
        else problems.push(`${o.id} failed: ${o.error}`);
        continue;
      }
      const reply = o.answer.reply;
      if (reply.kind !== 'refused') {
        answers.push(o.answer);
        continue;
      }
      problems.push(`${o.id} refused: ${reply.reason}`);
      if (reply.promised !== undefined) counterSeen = Math.max(counterSeen, reply.promised.counter);
      else if (reply.committedEpoch === committed.epoch) verdicts.push({ id: o.id, reason: reply.reason });
    }
    if (silent.length === 0 && problems.length === 0) return { kind: 'ok', answers };
    return { kind: 'failed', silent, problems, counterSeen, verdicts };
  }

  /** Tells every member the chosen state (best effort beyond this node), and adopts it here. */
  private async commitEverywhere(committed: MembershipState, state: MembershipState): Promise<void> {
    const { selfId, acceptor, peerCallMs, clock } = this.deps;
    const targets = new Set([selfId, ...quorumOf(committed, state), ...state.members.filter((m) => m.state !== 'removed').map((m) => m.id)]);
    const message = membershipToMessage(state);
    // Not bounded by the proposal's deadline: the state is chosen, and every member told now is
    // one that need not catch up later (a member not told learns it from its next Prepare).
    const endMs = clock.monotonicMs() + peerCallMs;
    const outcomes = await Promise.all(
      [...targets].map((id) =>
        this.call<CommitAnswer>(id, endMs, () => acceptor.commit(selfId, state), async (client, signal) =>
          commitAnswerFromMessage(await client.membershipCommit({ fromNodeId: selfId, state: message }, { signal }), id),
        ),
      ),
    );
    const own = outcomes.find((o) => o.id === selfId)!;
    if (!('answer' in own)) throw new Error(`epoch ${state.epoch} was agreed on, but this node failed to adopt it: ${own.error}`);
  }

  /** Adopts member `id`'s newer committed state; why not, if that failed. */
  private async catchUp(id: string): Promise<string | undefined> {
    try {
      const state = await this.fetchState(id);
      if (await this.deps.acceptor.catchUp(state)) return undefined;
      return `${id} answered a newer epoch but its GetMembership answered epoch ${state.epoch}, not newer than this node's`;
    } catch (err) {
      return `this node is behind ${id} and could not fetch its state: ${messageOf(err)}`;
    }
  }

  /** One call to member `id` (this node's own acceptor directly), within the proposal's deadline. */
  private async call<T>(id: string, endMs: number, local: () => Promise<T>, remote: (client: MembershipPeerClient, signal: AbortSignal) => Promise<T>): Promise<Outcome<T>> {
    const { clock, peerCallMs } = this.deps;
    try {
      if (id === this.deps.selfId) return { id, answer: await local() };
      // Whole milliseconds: AbortSignal.timeout refuses fractions.
      const remainingMs = Math.floor(endMs - clock.monotonicMs());
      if (remainingMs <= 0) return { id, error: 'the deadline passed before it was asked', silent: true };
      const client = this.deps.clientOf(id);
      if (client === undefined) return { id, error: 'this node has no connection to it', silent: true };
      return { id, answer: await remote(client, clock.timeoutSignal(Math.min(peerCallMs, remainingMs))) };
    } catch (err) {
      return { id, error: messageOf(err), silent: isSilence(err) };
    }
  }

  /** The error of a proposal that ran out of time, naming whoever held it up. */
  private giveUp(committed: MembershipState, failure: Failure, deadlineMs: number): Error {
    const others = failure.problems.length === 0 ? '' : `; also ${failure.problems.join('; ')}`;
    if (failure.silent.length > 0) {
      const ids = failure.silent.map((s) => s.id);
      const named = ids.map((id) => `${id} (${committed.members.find((m) => m.id === id)?.peer || 'no peer address'})`);
      const list = named.length === 1 ? named[0]! : `${named.slice(0, -1).join(', ')} and ${named.at(-1)!}`;
      const commands = ids.map((id) => `\`kvctl member mark-dead ${id}\``).join(' or ');
      const them = ids.length === 1 ? 'it' : 'them';
      const errors = failure.silent.map((s) => `${s.id}: ${s.error}`).join('; ');
      return new MembersUnreachableError(`${list} did not answer: every member must agree; bring ${them} back, or declare ${them} dead with ${commands} (last error: ${errors}${others})`, ids);
    }
    return new RequestTimeoutError(`no agreement on epoch ${committed.epoch + 1} within ${deadlineMs} ms: ${failure.problems.join('; ')}`);
  }
}
