import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { deriveSeed, Rng } from '../common/rng.js';
import { DigestForest } from '../cluster/digest-tree.js';
import { murmur3x86_32 } from '../cluster/hash.js';
import { ringHashSeed } from '../cluster/ring.js';
import { resolveConfig } from '../config/load-config.js';
import { describeChange, type MembershipState } from '../cluster/membership.js';
import { RequestDeadline } from '../replication/deadline.js';
import { InvalidRequestError, NotServingMemberError } from '../replication/errors.js';
import { composeNodeCore, type MembershipCommand, type NodeCore } from '../server/node-core.js';
import type { StorageFaults } from '../storage/repository.js';
import { streamsClosingSignal } from '../server/stream-messages.js';
import { decodeRecord } from '../storage/record-codec.js';
import { recordHeader } from '../storage/repository.js';
import { checkHistory, checkReplicasIdentical, type Anomaly, type Violation } from './checker.js';
import type { Op } from './history.js';
import type { ReplicaContents } from './replica-contents.js';
import { SimClock, SimScheduler } from './scheduler.js';
import { calmNetwork, type SimEndpoint, SimNetwork } from './sim-network.js';
import { simRetry } from './sim-retry.js';

/** What one simulated run does; everything random in it is drawn from `seed`. */
export interface SimulationOptions {
  readonly seed: number;
  readonly nodes?: number;
  /** Simulated milliseconds of client load and faults (then heal, converge, check). */
  readonly durationMs?: number;
  readonly clients?: number;
  readonly keysPerClient?: number;
  /** Apply only the first N fault steps of the schedule (to find the shortest failing prefix). */
  readonly faultSteps?: number;
  /** No faults at all: a control run. */
  readonly noFaults?: boolean;
  readonly graceSeconds?: number;
  /**
   * True: records on a member that lost their key, found after its cleanup (log entries
   * delivered late, §6.3), are counted and their holders restarted before the no-strays check.
   * Default false: they are `stray-copy` violations at once, since a node turns such deliveries
   * away once the change is over and the entries were re-targeted (log-retarget.ts).
   */
  readonly lateStraysAllowed?: boolean;
  /** Streaming throttled to 4 KB/s, one range at a time: a change stays pending for seconds (default off). */
  readonly slowStreaming?: boolean;
}

export interface SimulationResult {
  readonly seed: number;
  /** The history, one JSON line per operation (the determinism check compares it byte for byte). */
  readonly history: string;
  /** The fault schedule as applied, one line per step. */
  readonly trace: readonly string[];
  readonly faultStepsAvailable: number;
  readonly violations: readonly Violation[];
  readonly anomalies: readonly Anomaly[];
  readonly simulatedMs: number;
  readonly events: number;
  readonly opsAcked: number;
  readonly ops: number;
  /** Tombstones the nodes' GC purged during the run (the purge rule was exercised). */
  readonly tombstonesPurged: number;
  /** What the membership steps did (none drawn in most seeds). */
  readonly membership: MembershipSummary;
}

/** The membership steps of a run and their outcomes. */
export interface MembershipSummary {
  /** The member crashed (or cut off) for good and then declared dead, if the seed drew one. */
  readonly markDeadOf: string | undefined;
  /** How it was gone: crashed, or still running but cut off from every node until the heal. */
  readonly markDeadHow: 'crash' | 'isolate' | undefined;
  /** The mark-dead was committed (some node adopted the state declaring it dead). */
  readonly markDeadCommitted: boolean;
  /** changeMembership calls made for it (retries after refusals, unreachable members, lost proposers). */
  readonly markDeadAttempts: number;
  /** A member declared dead ran at the end (restarted, or reconnected) and was checked to serve nothing. */
  readonly deadMemberRan: boolean;
  /** Mark-deads of a member that was up and reachable: issued, refused with "is not dead", other outcomes, skipped (not calm). */
  readonly aliveProbes: { readonly issued: number; readonly refusedNotDead: number; readonly other: number; readonly skipped: number };
  /** The epoch every live member ended at. */
  readonly finalEpoch: number;
  /** The membership change of the run (add, remove, replace, cancel), if the seed drew one. */
  readonly change: ChangeSummary | undefined;
  /** One line per membership event (steps, attempts and their outcomes, adoptions), with times since the run began. */
  readonly log: readonly string[];
}

/** A run's membership change: what it asked for and what came of it. */
export interface ChangeSummary {
  /** The plan: 'add', 'add-remove' (add, then remove a member once the add is done), 'add-cancel', 'remove', 'replace' (of the member declared dead). */
  readonly plan: ChangePlanKind;
  /** The spare node started with cluster.join (the joiner, or the replacement). */
  readonly spare: string;
  /** The member removed (remove plans) or replaced (replace plans). */
  readonly target: string | undefined;
  /** Commands committed, in order ("add n4", "cancel of change 1", "remove n2", "replace n1 by n4"; "(moot)" or "(committed by an attempt given up on)" when no attempt answered so). */
  readonly committed: readonly string[];
  /** Commands refused for good (a cancel once reads switched). */
  readonly refused: readonly string[];
  /** changeMembership calls made for the plan (retries after refusals, unreachable members, lost proposers). */
  readonly attempts: number;
  /** Every change the run started was finished (done or cancelled) before the end checks. */
  readonly completed: boolean;
  /** The add was cancelled (its joiner removed). */
  readonly cancelled: boolean;
  /** The members of the final state, not removed. */
  readonly finalMembers: readonly string[];
  /** Records the old owners' cleanup deleted (every node, last incarnations). */
  readonly cleanedUp: number;
  /** Records checked on nodes that do not own them in the final ring (every one must be absent). */
  readonly strayChecks: number;
  /** Records found on non-owners after the first cleanup (late log deliveries, §6.3), before the holders' restart. */
  readonly straysAfterFirstCleanup: number;
  /** Client operations coordinated by the spare (clients learned it was added) and acknowledged. */
  readonly opsViaSpareAcked: number;
}

export type ChangePlanKind = 'add' | 'add-remove' | 'add-cancel' | 'remove' | 'replace';

const durationMsDefault = 20_000;
/** Simulated time after the load for delivery, repair and GC to finish before the check. */
const convergeMs = 30_000;
const requestMs = 2_000;
/** A client gives up on a call this long after its deadline (its coordinator crashed): indeterminate. */
const clientGiveUpMs = requestMs + 1_000;
/** In a 'storage' fault: the share of write jobs that fail (rolled back alone) and of commits that fail (all their jobs). */
const storageJobFailureRate = 0.2;
const storageCommitFailureRate = 0.1;
/** How often the tombstone workload starts a short-lived key (put, delete, left alone). */
const tombstoneKeyEveryMs = 250;
/** membership.deadAfterSeconds in the simulator: short, so a mark-dead can follow a crash within a run. */
const deadAfterSeconds = 2;
/** The share of seeds that crash (or cut off) a member for good and declare it dead; and that try to declare a reachable member dead. */
const markDeadShare = 0.35;
const aliveProbeShare = 0.4;
/** Deadline of one changeMembership attempt (a client gives up 2 s later: its proposer crashed or paused). */
const proposalMs = 3_000;
/** After heal, with every other member up: how long a mark-dead of a crashed member may still take to commit. */
const markDeadAfterHealMs = 15_000;
/** The share of seeds that run a membership change (add, remove, replace, cancel: drawChangePlan). */
const changeShare = 0.6;
/** After heal, with every node up: how long the change's commands, then the change itself, may still take. */
const changeAfterHealMs = 40_000;

interface SimNode {
  readonly id: string;
  readonly dataDir: string;
  clock: SimClock;
  endpoint: SimEndpoint;
  core: NodeCore | undefined;
  /** Down (crashed and not yet restarted) or starting. */
  up: boolean;
  incarnation: number;
  closing: AbortController;
  /** Until when (simulated ms) its storage fails some jobs and commits (a 'storage' fault step). */
  storageTroubleUntil: number;
  /** Crashed for good (a mark-dead step): restarts scheduled before do not happen. */
  retired: boolean;
  /** startNode is under way. */
  starting: boolean;
  /** The highest membership epoch any incarnation of it adopted. */
  lastEpoch: number;
}

/**
 * One deterministic run of the real replication core (coordinator, delivery loops, replica
 * apply, anti-entropy, tombstone GC, prober, on real LMDB) of `nodes` nodes in this process, on
 * simulated time and a simulated network, under a seeded client workload and fault schedule;
 * then heal, converge and check the history (src/sim/checker.ts, the same checker as the
 * fault-injection test) and that every hash tree equals a rebuild from storage.
 */
export async function runSimulation(options: SimulationOptions): Promise<SimulationResult> {
  const seed = options.seed;
  const nodeCount = options.nodes ?? 3;
  const durationMs = options.durationMs ?? durationMsDefault;
  const clientCount = options.clients ?? 4;
  const keysPerClient = options.keysPerClient ?? 3;
  const graceSeconds = options.graceSeconds ?? 10;
  const scheduler = new SimScheduler();
  const networkRng = new Rng(deriveSeed(seed, 1));
  const faultRng = new Rng(deriveSeed(seed, 2));
  const retryRng = new Rng(deriveSeed(seed, 3));
  const storageRng = new Rng(deriveSeed(seed, 4));
  // Membership agreement's retry jitter, shared by every node (one stream: the order of draws is the schedule's).
  const agreementRng = new Rng(deriveSeed(seed, 5));
  // The membership steps, drawn apart from the faults: a seed that draws none keeps its fault schedule exactly.
  const membershipRng = new Rng(deriveSeed(seed, 6));
  // Choices made while they run (which node proposes, retry pauses).
  const membershipRunRng = new Rng(deriveSeed(seed, 7));
  // The membership change (add, remove, replace, cancel) and the faults aimed at it, and the
  // choices made while it runs: streams of their own, so a seed that draws none keeps the rest.
  const changeRng = new Rng(deriveSeed(seed, 8));
  const changeRunRng = new Rng(deriveSeed(seed, 9));
  const network = new SimNetwork(scheduler, networkRng);
  const logger = pino({ level: 'silent' });
  const dir = mkdtempSync(join(tmpdir(), `kvstore-sim-${seed}-`));
  const ids = Array.from({ length: nodeCount }, (_, i) => `n${i + 1}`);
  const members = ids.map((id, i) => ({ id, peer: `${id}.sim:${7000 + i}` }));
  const replicationFactor = Math.min(3, nodeCount);
  // The spare a membership change adds (or puts in a dead member's place): started with
  // cluster.join when the change comes, unjoined (serving nothing) until a member adds it.
  const spareId = `n${nodeCount + 1}`;
  const sparePeer = `${spareId}.sim:${7000 + nodeCount}`;
  const nodes = new Map<string, SimNode>();
  const violations: Violation[] = [];
  // Rejections nobody handled, from code under simulation: bugs (the process policy counts them in a node).
  const unhandled: string[] = [];
  const onUnhandled = (reason: unknown): void => {
    unhandled.push(String((reason as Error)?.stack ?? reason).split('\n').slice(0, 3).join(' | '));
  };
  process.on('unhandledRejection', onUnhandled);
  let purgedByEarlierIncarnations = 0;
  let cleanedUpByEarlierIncarnations = 0;
  /** Simulated time the load began (times in the history and logs are relative to it). */
  let t0 = 0;
  // When each node was last at an end of a cut or of its lifting, crashed, started, paused or
  // resumed; and when it was last paused or resumed: a mark-dead of a reachable member waits for calm.
  const touchedAtMs = new Map<string, number>();
  const pausedAtMs = new Map<string, number>();
  const touch = (...nodeIds: string[]) => {
    for (const id of nodeIds) touchedAtMs.set(id, scheduler.now);
  };

  // Checks A and B of the membership agreement (docs/membership.md §2.3), at every adoption anywhere.
  const membershipLog: string[] = [];
  const adoptedByEpoch = new Map<number, { canonical: string; by: string; state: MembershipState }>();
  const sinceStart = () => `${(scheduler.now - t0).toFixed(0)} ms`;
  /** The newest state adopted anywhere (what a client learns from any member's list). */
  let newestEpoch = 0;
  const newestState = () => adoptedByEpoch.get(newestEpoch)!.state;
  const observeMembership = (node: SimNode, state: MembershipState, how: 'start' | 'adopted'): void => {
    const who = `${node.id} (incarnation ${node.incarnation})`;
    const canonical = canonicalMembership(state);
    const known = adoptedByEpoch.get(state.epoch);
    // Epoch 0 is an unjoined node's own state (itself alone, never agreed): not compared.
    if (state.epoch === 0) {
      // Nothing to compare.
    } else if (known === undefined) {
      adoptedByEpoch.set(state.epoch, { canonical, by: who, state });
      newestEpoch = Math.max(newestEpoch, state.epoch);
    } else if (known.canonical !== canonical) {
      violations.push({ kind: 'membership-split', message: `epoch ${state.epoch}: ${who} ${how === 'start' ? 'started with' : 'adopted'} ${describeMembership(state)}, but ${known.by} adopted ${describeMembership(known.state)}`, details: [`${who}: ${canonical}`, `${known.by}: ${known.canonical}`, ...membershipLog.slice(-20)] });
    }
    if (how === 'start' && state.epoch < node.lastEpoch) {
      violations.push({ kind: 'membership-behind', message: `${who} started at membership epoch ${state.epoch}, but an earlier incarnation had adopted epoch ${node.lastEpoch} (an adopted state must be persisted before it is used)`, details: membershipLog.slice(-20) });
    }
    if (how === 'adopted') {
      membershipLog.push(`${sinceStart()}: ${who} adopted epoch ${state.epoch}: ${describeMembership(state)}`);
      // Invariant B: epoch e is chosen only once every live member has committed e - 1 (a
      // member of e - 1: a node added at e had nothing to commit before).
      const previous = adoptedByEpoch.get(state.epoch - 1)?.state;
      for (const m of state.members) {
        const other = nodes.get(m.id);
        if (m.dead === true || m.state === 'removed' || other === undefined || other === node) continue;
        if (previous !== undefined && !previous.members.some((p) => p.id === m.id && p.state !== 'removed' && p.dead !== true)) continue;
        if (other.lastEpoch < state.epoch - 1) {
          violations.push({ kind: 'membership-behind', message: `${who} adopted epoch ${state.epoch} while member ${m.id}, not declared dead, was at epoch ${other.lastEpoch}`, details: membershipLog.slice(-20) });
        }
      }
    }
    node.lastEpoch = Math.max(node.lastEpoch, state.epoch);
  };
  /** A state adopted somewhere declares `id` dead: the mark-dead was chosen. */
  const declaredDead = (id: string) => [...adoptedByEpoch.values()].some((e) => e.state.members.some((m) => m.id === id && m.dead === true));

  /** Whether a client (or an operator) would send requests to `id`: a member of the newest state, not removed. */
  const inClientView = (id: string) => newestState().members.some((m) => m.id === id && m.state !== 'removed');
  const configOf = (id: string) =>
    resolveConfig({
      nodeId: id,
      dataDir: join(dir, id),
      logLevel: 'silent',
      // The spare joins a running cluster (cluster.join): it serves nothing until a member adds it.
      ...(id === spareId ? { peerListen: sparePeer, cluster: { join: [members[0]!.peer], replicationFactor } } : { cluster: { members, replicationFactor } }),
      timeouts: { requestMs, peerCallMs: 1_000 },
      replication: { retryMinMs: 50, retryMaxMs: 1_000, probeIntervalMs: 500 },
      antiEntropy: { intervalSeconds: 5, maxRecordsPerSecond: 20_000 },
      tombstones: { graceSeconds },
      membership: { deadAfterSeconds },
      // Slow streaming: a change's pending phase lasts seconds (as with a real data set), so more operations and faults meet it.
      ...(options.slowStreaming === true ? { streaming: { maxBytesPerSecond: 4_000, rangesInFlight: 1 } } : {}),
    });

  const storageFaultsOf = (node: SimNode): StorageFaults => {
    const troubled = () => scheduler.now < node.storageTroubleUntil;
    return {
      failJob: () => troubled() && storageRng.nextDouble() < storageJobFailureRate,
      failCommit: () => troubled() && storageRng.nextDouble() < storageCommitFailureRate,
    };
  };
  const startNode = async (node: SimNode): Promise<void> => {
    node.starting = true;
    node.incarnation++;
    const clock = new SimClock(scheduler);
    clock.skewMs = node.clock.skewMs;
    node.clock = clock;
    node.closing = streamsClosingSignal();
    const endpoint: SimEndpoint = { incarnation: node.incarnation, clock, service: undefined };
    node.endpoint = endpoint;
    network.register(node.id, endpoint);
    const core = await composeNodeCore(configOf(node.id), {
      logger,
      clock,
      connect: network.connector(node.id, endpoint),
      retry: simRetry(clock, retryRng),
      simulatedStorage: true,
      storageFaults: storageFaultsOf(node),
      closing: node.closing.signal,
      rng: { next: () => agreementRng.nextDouble() },
    });
    node.core = core;
    observeMembership(node, core.membership.current(), 'start');
    core.membership.onChange((state) => observeMembership(node, state, 'adopted'));
    endpoint.service = core.peerService;
    // As a real start: the clock is seeded from the peers before the node coordinates anything.
    await scheduler.settleOn(core.seedClockFromPeers(), 5_000);
    core.start();
    node.up = true;
    node.starting = false;
    touch(node.id);
  };
  const crashNode = async (node: SimNode): Promise<void> => {
    node.up = false;
    node.clock.kill();
    node.endpoint.service = undefined;
    const core = node.core;
    node.core = undefined;
    purgedByEarlierIncarnations += core?.tombstones.purged ?? 0;
    cleanedUpByEarlierIncarnations += core?.changes.cleanedUp ?? 0;
    node.closing.abort();
    if (core !== undefined) await core.abandon();
  };
  /** A clean restart (stop, then start on the same disk), with the network calm: from outside the run loop only. */
  const restartNode = async (node: SimNode): Promise<void> => {
    const core = node.core!;
    await scheduler.runWhile(core.stop(), scheduler.now + 30_000);
    purgedByEarlierIncarnations += core.tombstones.purged;
    cleanedUpByEarlierIncarnations += core.changes.cleanedUp;
    node.up = false;
    node.clock.kill();
    node.endpoint.service = undefined;
    node.core = undefined;
    node.closing.abort();
    await startNode(node);
  };

  const newNode = (id: string): SimNode => {
    const node: SimNode = { id, dataDir: join(dir, id), clock: new SimClock(scheduler), endpoint: { incarnation: 0, clock: new SimClock(scheduler), service: undefined }, core: undefined, up: false, incarnation: 0, closing: new AbortController(), storageTroubleUntil: 0, retired: false, starting: false, lastEpoch: 0 };
    nodes.set(id, node);
    return node;
  };

  try {
    for (const id of ids) newNode(id);
    for (const node of nodes.values()) await startNode(node);

    // The workload: each client owns its keys and runs its operations one after the other.
    const ops: Op[] = [];
    t0 = scheduler.now;
    let loadRunning = true;
    const clientLoops: Promise<void>[] = [];
    /** One operation by client `client` through a random up node's coordinator, recorded in `ops`. */
    const runOp = async (rng: Rng, client: number, workload: Op['workload'], kind: Op['kind'], key: string, value: string | undefined): Promise<Op | undefined> => {
      // A client cannot tell a paused node from a slow one: it may pick one (a crashed one
      // refuses connections, so it is not picked).
      // It sends to the members it knows of (the newest member list): a node added, not yet or
      // no longer a member, is not picked.
      const candidates = [...nodes.values()].filter((n) => n.up && n.core !== undefined && inClientView(n.id));
      if (candidates.length === 0) return undefined;
      const coordinator = candidates[rng.nextInt(candidates.length)]!;
      const op: Op = { id: ops.length, client, workload, kind, key, ...(value === undefined ? {} : { value }), coordinator: coordinator.id, startMs: scheduler.now - t0, endMs: Number.NaN, outcome: 'pending' };
      ops.push(op);
      const core = coordinator.core!;
      // As gRPC does: the call's signal aborts when the client's deadline passes (true time),
      // and the request reaches the node's code when the node runs (late, if it was paused).
      const clientDeadline = new AbortController();
      const expiry = scheduler.at(scheduler.now + requestMs, () => clientDeadline.abort(new Error('client deadline passed')));
      const deadline = new RequestDeadline(clientDeadline.signal, requestMs, coordinator.clock);
      const call = new Promise<{ found: boolean; value: Buffer | undefined }>((resolve, reject) => {
        coordinator.clock.defer(() => {
          const started =
            kind === 'get'
              ? core.coordinator.read(Buffer.from(key), 'quorum', deadline)
              : // Every other write wakes replication as a unary call's does (after the turn), the rest as a stream's.
                core.coordinator.write(Buffer.from(key), Buffer.from(value ?? ''), kind === 'delete', 'quorum', deadline, op.id % 2 === 0 ? 'now' : 'after-turn');
          started.then(resolve, reject);
        });
      });
      const result = await withGiveUp(scheduler, call, clientGiveUpMs);
      expiry.cancel();
      deadline.disarm();
      op.endMs = scheduler.now - t0;
      if (result.ok) {
        op.outcome = 'ok';
        const r = result.value;
        op.observed = kind === 'delete' ? (r.found ? { live: true } : null) : r.found ? (r.value ?? Buffer.alloc(0)).toString('utf8') : null;
      } else {
        op.outcome = result.error instanceof InvalidRequestError ? 'failed' : 'indeterminate';
        op.error = String((result.error as Error)?.message ?? result.error).slice(0, 200);
      }
      return op;
    };
    for (let c = 0; c < clientCount; c++) {
      const rng = new Rng(deriveSeed(seed, 100 + c));
      const keys = Array.from({ length: keysPerClient }, (_, k) => `c${c}k${k}`);
      let written = 0;
      clientLoops.push(
        (async () => {
          while (loadRunning) {
            const key = keys[rng.nextInt(keys.length)]!;
            const draw = rng.nextDouble();
            const kind = draw < 0.5 ? 'put' : draw < 0.7 ? 'delete' : 'get';
            const value = kind === 'put' ? `c${c}-${written + 1}` : undefined;
            const op = await runOp(rng, c, 'put-delete', kind, key, value);
            if (op === undefined) {
              await simSleep(scheduler, 100);
              continue;
            }
            if (kind === 'put') written++;
            await simSleep(scheduler, 5 + rng.nextInt(45));
          }
        })(),
      );
    }
    // The tombstone workload: the keys above are rewritten every few tens of ms, so their
    // tombstones are never older than the grace and GC never purges them. This client writes
    // short-lived keys instead, each put once, deleted 0.1-3 s later, and then left alone: each
    // delete's tombstone becomes purgeable, whatever fault is under way when it is made.
    {
      const client = clientCount;
      const rng = new Rng(deriveSeed(seed, 100 + client));
      let lifecycles = 0;
      const lifecycle = async (n: number): Promise<void> => {
        const key = `t${n}`;
        if ((await runOp(rng, client, 'put-delete', 'put', key, `t${n}-1`)) === undefined) return;
        await simSleep(scheduler, 100 + rng.nextInt(2_900));
        await runOp(rng, client, 'put-delete', 'delete', key, undefined);
      };
      clientLoops.push(
        (async () => {
          const running: Promise<void>[] = [];
          while (loadRunning) {
            running.push(lifecycle(++lifecycles));
            await simSleep(scheduler, tombstoneKeyEveryMs);
          }
          await Promise.all(running);
        })(),
      );
    }

    // The fault schedule: drawn in full first (so a prefix of it is the same steps), applied as time comes.
    const faultSchedule = drawFaultSchedule(faultRng, ids, durationMs, options.noFaults === true, graceSeconds * 1000);
    const membershipSteps = drawMembershipSteps(membershipRng, ids, durationMs, options.noFaults === true, deadAfterSeconds * 1000, replicationFactor);
    const changeSteps = drawChangePlan(changeRng, ids, spareId, durationMs, options.noFaults === true, membershipSteps.find((st) => st.kind === 'mark-dead'), replicationFactor);
    const schedule = mergeSteps(faultSchedule, [...membershipSteps, ...changeSteps]);
    const applied = options.faultSteps === undefined ? schedule : schedule.slice(0, options.faultSteps);
    const trace: string[] = [];
    for (const planned of applied) {
      scheduler.at(t0 + planned.atMs, () => {
        // A fault aimed at a role of the change (its joiner, driver, leaver) takes the node that has it now.
        const step = resolveRole(planned);
        trace.push(`${step.atMs} ms: ${step.description}`);
        void applyFault(step);
      });
    }
    const resolveRole = (step: FaultStep): FaultStep => {
      if (step.role === undefined) return step;
      const state = newestState();
      let id: string | undefined;
      if (step.role === 'joiner') id = nodes.has(spareId) ? spareId : undefined;
      else if (state.change !== undefined) {
        id = step.role === 'driver' ? driverOf(state) : state.change.kind === 'remove' ? state.change.subjects[0] : undefined;
      }
      if (id === undefined) return { ...step, description: `${step.description}: no ${step.role} now, skipped` };
      return { ...step, node: id, description: `${step.description}: ${id}` };
    };
    const applyFault = async (step: FaultStep): Promise<void> => {
      const node = step.node === undefined ? undefined : nodes.get(step.node);
      switch (step.kind) {
        case 'cut':
          network.cut(step.from!, step.to!);
          touch(step.from!, step.to!);
          break;
        case 'heal': {
          const ends = network.cutEnds();
          network.healAll();
          const still = network.cutEnds();
          touch(...[...ends].filter((id) => !still.has(id)));
          break;
        }
        case 'isolate-long':
          // Longer than the tombstone grace: deletes made meanwhile become purgeable while this
          // node, which missed them, is away. Heal steps do not end it; it ends on its own.
          for (const other of ids) {
            if (other === step.node) continue;
            network.cutLong(step.node!, other);
            network.cutLong(other, step.node!);
          }
          touch(...ids);
          scheduler.at(scheduler.now + step.forMs!, () => {
            for (const other of ids) {
              if (other === step.node) continue;
              network.restoreLong(step.node!, other);
              network.restoreLong(other, step.node!);
            }
            touch(...ids);
          });
          break;
        case 'cut-long':
          // One way, longer than the grace: the sender's log holds writes for the peer while
          // both still answer tombstone GC (which needs every member to answer, not every path).
          network.cutLong(step.from!, step.to!);
          touch(step.from!, step.to!);
          scheduler.at(scheduler.now + step.forMs!, () => {
            network.restoreLong(step.from!, step.to!);
            touch(step.from!, step.to!);
          });
          break;
        case 'crash':
          if (node !== undefined && node.up) {
            await crashNode(node);
            touch(node.id);
            scheduler.at(scheduler.now + step.forMs!, () => {
              // Gone for good meanwhile (a mark-dead step): not restarted.
              if (node.retired) return;
              if (step.skewMs !== undefined) node.clock.skewMs = Math.min(node.clock.skewMs, step.skewMs);
              void startNode(node);
            });
          }
          break;
        case 'pause':
          if (node !== undefined && node.up && !node.clock.isPaused) {
            node.clock.pause();
            touch(node.id);
            pausedAtMs.set(node.id, scheduler.now);
            const paused = node.clock;
            scheduler.at(scheduler.now + step.forMs!, () => {
              paused.resume();
              touch(node.id);
              pausedAtMs.set(node.id, scheduler.now);
            });
          }
          break;
        case 'mark-dead':
          if (node !== undefined) void goneForGood(node, step);
          break;
        case 'mark-dead-alive':
          if (node !== undefined) void probeMarkDeadOfLive(node, nodes.get(step.from!)!);
          break;
        case 'member-change':
          startChangePlan(step);
          break;
        case 'isolate':
          // Cut off from every node both ways for a while (heal steps lift it sooner).
          if (node !== undefined) {
            const others = [...nodes.keys()].filter((id) => id !== node.id);
            for (const other of others) {
              network.cut(node.id, other);
              network.cut(other, node.id);
            }
            touch(node.id, ...others);
            scheduler.at(scheduler.now + step.forMs!, () => {
              for (const other of others) {
                network.restore(node.id, other);
                network.restore(other, node.id);
              }
              touch(node.id, ...others);
            });
          }
          break;
        case 'storage':
          if (node !== undefined) node.storageTroubleUntil = scheduler.now + step.forMs!;
          break;
        case 'skew':
          if (node !== undefined) node.clock.skewMs = step.skewMs!;
          break;
        case 'network':
          network.conditions = { ...calmNetwork, ...step.conditions };
          break;
      }
    };

    // Membership steps: what an operator's `kvctl member mark-dead` does, on a random live node's core.
    /** One changeMembership call on `node`, run on its clock; a give-up if it crashed or froze meanwhile. */
    const proposeOn = (node: SimNode, command: MembershipCommand, deadlineMs: number) => {
      const core = node.core!;
      return withGiveUp(
        scheduler,
        new Promise<MembershipState>((resolve, reject) => node.clock.defer(() => core.changeMembership(command, deadlineMs).then(resolve, reject))),
        deadlineMs + 2_000,
      );
    };
    const errorText = (error: unknown) => String((error as Error)?.message ?? error);
    /** The mark-dead of this run, once its step has come. */
    let markDead: { id: string; how: 'crash' | 'isolate'; restartAtEnd: boolean; proposing: boolean; attempts: number; loop: Promise<void> | undefined } | undefined;
    const aliveProbes = { issued: 0, refusedNotDead: 0, other: 0, skipped: 0 };
    /** Crashes `node` for good (or cuts it off from everyone until the heal), waits past deadAfterSeconds, then declares it dead. */
    const goneForGood = async (node: SimNode, step: FaultStep): Promise<void> => {
      const how = step.how!;
      markDead = { id: node.id, how, restartAtEnd: step.restartAtEnd === true, proposing: true, attempts: 0, loop: undefined };
      membershipLog.push(`${sinceStart()}: ${step.description}`);
      if (how === 'crash') {
        node.retired = true;
        for (let waited = 0; node.starting && waited < 10_000; waited += 50) await simSleep(scheduler, 50);
        if (node.up) await crashNode(node);
      } else network.exile(node.id);
      touch(...ids);
      await simSleep(scheduler, step.forMs!);
      const md = markDead;
      md.loop = (async () => {
        while (md.proposing && !declaredDead(md.id)) {
          const candidates = [...nodes.values()].filter((n) => n.up && n.core !== undefined && n.id !== md.id && inClientView(n.id));
          if (candidates.length === 0) {
            await simSleep(scheduler, 250);
            continue;
          }
          const proposer = candidates[membershipRunRng.nextInt(candidates.length)]!;
          md.attempts++;
          const outcome = await proposeOn(proposer, { kind: 'mark-dead', id: md.id }, proposalMs);
          membershipLog.push(`${sinceStart()}: mark-dead ${md.id} via ${proposer.id}: ${outcome.ok ? `committed as epoch ${outcome.value.epoch}` : errorText(outcome.error)}`);
          if (outcome.ok) return;
          await simSleep(scheduler, 200 + membershipRunRng.nextInt(800));
        }
      })();
    };
    /**
     * Declares dead `target`, which is up and reachable: every acceptor must refuse it ("... is
     * not dead"). Issued once the target is calm (up, not paused, at no end of a cut in force or
     * lifted, not crashed or restarted for deadAfterSeconds and a second; no node paused for as
     * long) and every member the agreement asks is up: only then is "reachable" certain and the
     * acceptors' own check decides. If the load ends first, it is issued after the heal instead.
     * Wall-clock jumps are not waited out: the contact check must not depend on the wall clock.
     */
    const calmWindowMs = deadAfterSeconds * 1000 + 1_000;
    const ready = (n: SimNode) => n.up && !n.starting && !n.clock.isPaused && n.core !== undefined && !n.retired;
    const calmFor = (target: SimNode, proposer: SimNode) =>
      markDead?.id !== target.id &&
      markDead?.id !== proposer.id &&
      // Every member the agreement asks is up, so the acceptors' own check decides.
      [...nodes.values()].every((n) => n.retired || declaredDead(n.id) || ready(n)) &&
      !network.cutEnds().has(target.id) &&
      scheduler.now - (touchedAtMs.get(target.id) ?? Number.NEGATIVE_INFINITY) >= calmWindowMs &&
      [...nodes.values()].every((n) => !n.up || (!n.clock.isPaused && scheduler.now - (pausedAtMs.get(n.id) ?? Number.NEGATIVE_INFINITY) >= calmWindowMs));
    let probeAfterHeal: { target: SimNode; proposer: SimNode } | undefined;
    const probeMarkDeadOfLive = async (target: SimNode, proposer: SimNode, afterHeal = false): Promise<void> => {
      while (!afterHeal && loadRunning && !calmFor(target, proposer)) await simSleep(scheduler, 100);
      if (!calmFor(target, proposer)) {
        if (!afterHeal) probeAfterHeal = { target, proposer };
        else {
          aliveProbes.skipped++;
          membershipLog.push(`${sinceStart()}: mark-dead of the live ${target.id} via ${proposer.id}: skipped (${target.id} or ${proposer.id} not calm after heal)`);
        }
        return;
      }
      aliveProbes.issued++;
      const calmMs = Math.round(scheduler.now - (touchedAtMs.get(target.id) ?? 0));
      const outcome = await proposeOn(proposer, { kind: 'mark-dead', id: target.id }, proposalMs);
      membershipLog.push(`${sinceStart()}: mark-dead of the live ${target.id} (calm for ${calmMs} ms) via ${proposer.id}${afterHeal ? ' after heal' : ''}: ${outcome.ok ? `committed as epoch ${outcome.value.epoch}` : errorText(outcome.error)}`);
      if (outcome.ok) {
        violations.push({ kind: 'alive-marked-dead', message: `${target.id}, up and reachable for ${calmMs} ms, was declared dead (epoch ${outcome.value.epoch}) by a mark-dead via ${proposer.id}`, details: membershipLog.slice(-20) });
      } else if (/is not dead/.test(errorText(outcome.error))) aliveProbes.refusedNotDead++;
      else aliveProbes.other++;
    };

    // The membership change: what an operator's `kvctl member add / remove / replace / cancel`
    // does, on a random member's core, with the spare started with cluster.join first.
    /** Some node adopted a state with `id` a member (an add or replace naming it was chosen). */
    const memberIn = (id: string) => [...adoptedByEpoch.entries()].some(([epoch, e]) => epoch > 0 && e.state.members.some((m) => m.id === id));
    const anyAdopted = (test: (state: MembershipState) => boolean) => [...adoptedByEpoch.entries()].some(([epoch, e]) => epoch > 0 && test(e.state));
    let change:
      | { readonly plan: ChangePlanKind; readonly target: string | undefined; committed: string[]; refused: string[]; attempts: number; running: boolean; skipped: boolean; loop: Promise<void> | undefined }
      | undefined;
    /** Proposes `command` via a random member until it commits (or `done` holds: an earlier attempt committed, or it is moot), is refused for good, or the plan stops. */
    const proposeUntil = async (command: MembershipCommand, what: string, done: () => boolean, refusedForGood: (message: string) => boolean): Promise<boolean> => {
      const c = change!;
      for (let round = 0; c.running && !done() && round < 500; round++) {
        const candidates = [...nodes.values()].filter((n) => n.up && n.core !== undefined && inClientView(n.id) && !declaredDead(n.id));
        if (candidates.length === 0) {
          await simSleep(scheduler, 250);
          continue;
        }
        const proposer = candidates[changeRunRng.nextInt(candidates.length)]!;
        c.attempts++;
        const outcome = await proposeOn(proposer, command, proposalMs);
        membershipLog.push(`${sinceStart()}: ${what} via ${proposer.id}: ${outcome.ok ? `committed as epoch ${outcome.value.epoch}` : errorText(outcome.error)}`);
        if (outcome.ok) {
          c.committed.push(what);
          return true;
        }
        if (refusedForGood(errorText(outcome.error))) {
          c.refused.push(what);
          return false;
        }
        await simSleep(scheduler, 200 + changeRunRng.nextInt(800));
      }
      if (done()) {
        c.committed.push(`${what} (${command.kind === 'cancel' ? 'moot' : 'committed by an attempt given up on'})`);
        return true;
      }
      return false;
    };
    const waitFor = async (condition: () => boolean): Promise<boolean> => {
      for (let round = 0; change!.running && !condition() && round < 2_000; round++) await simSleep(scheduler, 100);
      return condition();
    };
    const startSpare = async (): Promise<void> => {
      if (nodes.has(spareId)) return;
      membershipLog.push(`${sinceStart()}: ${spareId} started with cluster.join (unjoined, serving nothing)`);
      await startNode(newNode(spareId));
    };
    const runChangePlan = async (step: FaultStep): Promise<void> => {
      const plan = step.plan!;
      const target = step.target;
      membershipLog.push(`${sinceStart()}: ${step.description}`);
      if (plan === 'replace') {
        // mark-dead comes first (docs/membership.md §4.3).
        if (!(await waitFor(() => declaredDead(target!)))) {
          membershipLog.push(`${sinceStart()}: replace of ${target}: skipped, it was not declared dead`);
          change!.skipped = true;
          return;
        }
      }
      if (plan !== 'remove') {
        await startSpare();
        await simSleep(scheduler, step.delayMs!);
      }
      if (plan === 'add' || plan === 'add-remove' || plan === 'add-cancel') {
        if (!(await proposeUntil({ kind: 'add', id: spareId, peer: sparePeer }, `add ${spareId}`, () => memberIn(spareId), () => false))) return;
        const added = [...adoptedByEpoch.entries()].sort(([a], [b]) => a - b).find(([epoch, e]) => epoch > 0 && e.state.members.some((m) => m.id === spareId))![1].state;
        const changeId = added.lastChangeId!;
        if (plan === 'add-cancel') {
          await simSleep(scheduler, step.secondAfterMs!);
          const pending = () => newestState().change?.id === changeId && newestState().change?.phase === 'pending';
          await proposeUntil({ kind: 'cancel' }, `cancel of change ${changeId}`, () => !pending(), (message) => /has switched reads|no change in progress/.test(message));
        } else if (plan === 'add-remove') {
          if (!(await waitFor(() => newestState().change === undefined && newestState().members.some((m) => m.id === spareId && m.state === 'normal')))) return;
          await simSleep(scheduler, step.secondAfterMs!);
          await proposeUntil({ kind: 'remove', id: target! }, `remove ${target}`, () => anyAdopted((st) => st.members.some((m) => m.id === target && (m.state === 'leaving' || m.state === 'removed'))), () => false);
        }
      } else if (plan === 'remove') {
        await proposeUntil({ kind: 'remove', id: target! }, `remove ${target}`, () => anyAdopted((st) => st.members.some((m) => m.id === target && (m.state === 'leaving' || m.state === 'removed'))), () => false);
      } else {
        await proposeUntil({ kind: 'replace', oldId: target!, newId: spareId, peer: sparePeer }, `replace ${target} by ${spareId}`, () => memberIn(spareId), () => false);
      }
    };
    const startChangePlan = (step: FaultStep): void => {
      change = { plan: step.plan!, target: step.target, committed: [], refused: [], attempts: 0, running: true, skipped: false, loop: undefined };
      change.loop = runChangePlan(step);
    };

    await scheduler.runUntil(t0 + durationMs);
    loadRunning = false;
    // A member cut off for good is reachable again after the heal, so its mark-dead can only commit before.
    if (markDead?.how === 'isolate') markDead.proposing = false;
    await scheduler.runWhile(Promise.all(clientLoops), scheduler.now + clientGiveUpMs * 2);

    // Heal: every link, calm network, every node up and running; then converge.
    network.healEverything();
    network.conditions = { ...calmNetwork };
    for (const node of nodes.values()) if (node.clock.isPaused) node.clock.resume();
    await scheduler.runUntil(scheduler.now + 5_000);
    for (const node of nodes.values()) if (!node.up && node.core === undefined && !node.retired) await startNode(node);
    if (markDead !== undefined) {
      // A crashed member's mark-dead must now commit: every other member is up, the network calm.
      if (markDead.how === 'crash' && markDead.loop !== undefined && !declaredDead(markDead.id)) await scheduler.runWhile(markDead.loop, scheduler.now + markDeadAfterHealMs);
      markDead.proposing = false;
      if (markDead.loop !== undefined) await scheduler.runWhile(markDead.loop, scheduler.now + proposalMs * 3);
      if (markDead.how === 'crash' && markDead.loop !== undefined && !declaredDead(markDead.id)) {
        violations.push({ kind: 'not-converged', message: `mark-dead of ${markDead.id} (crashed for good) did not commit within ${markDeadAfterHealMs} ms after heal, with every other member up`, details: membershipLog.slice(-20) });
      }
      // Its disk comes back: declared dead, it must learn so and serve nothing; not declared dead,
      // it is an ordinary member again and must converge like the others.
      const gone = nodes.get(markDead.id)!;
      if (gone.retired && (markDead.restartAtEnd || !declaredDead(gone.id))) {
        gone.retired = false;
        await startNode(gone);
      }
    }
    if (change !== undefined) {
      // The change must now finish by itself (streaming, switch, done; or the cancel), with
      // every node up and the network calm: first the plan's commands, then the change.
      const c = change;
      // A replace waits for its mark-dead; one that never committed (a member cut off, reachable again after the heal) has nothing to replace.
      if (c.plan === 'replace' && !declaredDead(c.target!)) {
        c.running = false;
        c.skipped = true;
      }
      if (c.loop !== undefined) await scheduler.runWhile(c.loop, scheduler.now + changeAfterHealMs);
      const until = scheduler.now + changeAfterHealMs;
      while (scheduler.now < until && newestState().change !== undefined) await scheduler.runUntil(scheduler.now + 250);
      c.running = false;
      if (c.loop !== undefined) await scheduler.runWhile(c.loop, scheduler.now + proposalMs * 3);
      membershipLog.push(`${sinceStart()}: after heal: ${describeMembership(newestState())}`);
      // With every node up and the network calm, each command of the plan must have been chosen.
      const removing = c.plan === 'remove' || c.plan === 'add-remove';
      const missing = [
        ...(c.plan !== 'remove' && !c.skipped && !memberIn(spareId) ? [`${c.plan === 'replace' ? `replace of ${c.target} by` : 'add of'} ${spareId}`] : []),
        ...(removing && !anyAdopted((st) => st.members.some((m) => m.id === c.target && (m.state === 'leaving' || m.state === 'removed'))) ? [`remove of ${c.target}`] : []),
      ];
      if (missing.length > 0) {
        violations.push({ kind: 'not-converged', message: `the ${missing.join(' and the ')} never committed (${c.attempts} attempts), the last ${changeAfterHealMs} ms after heal with every node up`, details: membershipLog.slice(-20) });
      }
      const pending = newestState().change;
      if (pending !== undefined) {
        violations.push({ kind: 'not-converged', message: `${describeChange(newestState(), pending)} did not finish within ${changeAfterHealMs} ms after heal, with every node up`, details: membershipLog.slice(-20) });
      }
    }
    await scheduler.runUntil(scheduler.now + convergeMs);
    if (probeAfterHeal !== undefined) await scheduler.runWhile(probeMarkDeadOfLive(probeAfterHeal.target, probeAfterHeal.proposer, true), scheduler.now + proposalMs * 3);
    // The membership every live member must end at: the newest state adopted anywhere (one per epoch: check A).
    const finalEpoch = Math.max(...adoptedByEpoch.keys());
    const finalState = adoptedByEpoch.get(finalEpoch)!.state;
    const dead = new Set(finalState.members.filter((m) => m.dead === true).map((m) => m.id));
    const running = [...nodes.values()].filter((n) => n.core !== undefined);
    // The final members, not declared dead; and the nodes running outside the membership
    // (removed by a change, a joiner whose add was cancelled or never chosen).
    const isMember = (id: string) => finalState.members.some((m) => m.id === id && m.state !== 'removed');
    const live = running.filter((n) => !dead.has(n.id) && isMember(n.id));
    const outsiders = running.filter((n) => !dead.has(n.id) && !isMember(n.id));
    const keys = new Set(ops.map((o) => o.key));
    const ownersOf = (key: string) => live[0]!.core!.ring().preferenceList(Buffer.from(key), replicationFactor);
    /** Records on members that do not own their key in the final ring, and on running nodes outside the membership. */
    const findStrays = () => {
      let checks = 0;
      const lines: string[] = [];
      const holders = new Set<SimNode>();
      for (const node of [...live, ...outsiders]) {
        for (const key of keys) {
          if (ownersOf(key).includes(node.id)) continue;
          checks++;
          const stored = node.core!.repo.getRecord(Buffer.from(key));
          if (stored === undefined) continue;
          const r = decodeRecord(stored);
          holders.add(node);
          lines.push(`${node.id}${isMember(node.id) ? '' : ' (not a member)'} holds ${JSON.stringify(key)} (${r.tombstone ? 'tombstone' : JSON.stringify(Buffer.from(r.value).toString('utf8'))} @${r.version.wallMs}.${r.version.counter}@${r.version.nodeId}), owned by ${ownersOf(key).join(', ')}`);
        }
      }
      return { checks, lines, holders };
    };
    // With lateStraysAllowed (the behaviour before re-targeting, docs/membership.md §6.3): stray
    // copies left by late log deliveries are counted, their holders restarted (cleanup runs again
    // at start), and only then checked.
    let straysAfterFirstCleanup = 0;
    if (options.lateStraysAllowed === true && (finalState.lastChangeId ?? 0) > 0 && finalState.change === undefined) {
      const first = findStrays();
      straysAfterFirstCleanup = first.lines.length;
      if (first.holders.size > 0) {
        membershipLog.push(`${sinceStart()}: ${first.lines.length} records on nodes that do not own them after the cleanup (log entries delivered late, §6.3), e.g. ${first.lines[0]}: restarting ${[...first.holders].map((n) => n.id).join(', ')} (cleanup runs again at start)`);
        for (const node of first.holders) await restartNode(node);
        await scheduler.runUntil(scheduler.now + 5_000);
      }
    }
    // An operator does not repair through a member declared dead (it is fenced anyway).
    for (const node of live) await scheduler.runWhile(node.core!.antiEntropy.repairAll(), scheduler.now + 60_000);
    await scheduler.runUntil(scheduler.now + 2_000);

    // Check: the history against the replicas' final contents, replicas identical, trees rebuilt.
    // A member declared dead holds nothing the checker expects (it is not a replica any more);
    // that its stale copies never come back is judged on the live replicas' records.
    const replicas = new Map<string, ReplicaContents>();
    for (const node of running) {
      violations.push(...checkTreesMatchStorage(node, keys));
      if (!live.includes(node)) continue;
      const contents: ReplicaContents = new Map();
      for (const key of keys) {
        const stored = node.core!.repo.getRecord(Buffer.from(key));
        if (stored === undefined) continue;
        const r = decodeRecord(stored);
        contents.set(key, { tombstone: r.tombstone, value: Buffer.from(r.value).toString('utf8'), version: r.version });
      }
      replicas.set(node.id, contents);
    }
    const byKey = new Map<string, Op[]>();
    for (const op of ops) (byKey.get(op.key) ?? byKey.set(op.key, []).get(op.key)!).push(op);
    // With more nodes than replicationFactor, only a key's replicas are judged (the others never
    // hold it); a member declared dead still owns its ranges on the ring but is no replica.
    const replicasOf = (key: string) => ownersOf(key).filter((id) => !dead.has(id));
    const checked = checkHistory(byKey, replicas, { replicasOf });
    violations.push(...checked.violations, ...checkReplicasIdentical(byKey, replicas, 20, replicasOf));
    // Nowhere else (issue 16 item 5): once the old owners' cleanup ran, a key's records are on its
    // owners in the final ring only: no copy on a member that does not own it, nor on a node
    // outside the membership (removed, or a cancelled joiner). A member declared dead is fenced
    // and not judged (its disk is to be wiped).
    // During a change (one that did not finish: not-converged above) a key has the owners of both rings.
    const { checks: strayChecks, lines: strays } = finalState.change === undefined ? findStrays() : { checks: 0, lines: [] };
    if (strays.length > 0) {
      violations.push({ kind: 'stray-copy', message: `${strays.length} records on nodes that do not own them in the final ring (epoch ${finalEpoch}), after cleanup: ${strays[0]}`, details: [...strays.slice(0, 10), ...membershipLog.slice(-10)] });
    }
    // Check B after heal: every live member at the final epoch, with its state.
    const finalCanonical = canonicalMembership(finalState);
    for (const node of live) {
      const state = node.core!.membership.current();
      if (canonicalMembership(state) !== finalCanonical) {
        violations.push({ kind: 'membership-behind', message: `${node.id} ended at membership epoch ${state.epoch} (${describeMembership(state)}), not at epoch ${finalEpoch} (${describeMembership(finalState)}), after heal`, details: membershipLog.slice(-20) });
      }
    }
    /** A QUORUM read through `node`, which must serve nothing: undefined if it refused as not serving, else what it did. */
    const servedBy = async (node: SimNode): Promise<string | undefined> => {
      const deadline = new RequestDeadline(new AbortController().signal, requestMs, node.clock);
      const answer = withGiveUp(scheduler, node.core!.coordinator.read(Buffer.from('c0k0'), 'quorum', deadline), clientGiveUpMs);
      await scheduler.runWhile(answer, scheduler.now + clientGiveUpMs * 2);
      const outcome = await answer;
      deadline.disarm();
      if (!outcome.ok && outcome.error instanceof NotServingMemberError) return undefined;
      return outcome.ok ? 'answered a QUORUM read' : `failed a QUORUM read otherwise than as not serving: ${String((outcome.error as Error)?.message ?? outcome.error)}`;
    };
    // A node outside the membership (removed, never added or cancelled) serves nothing.
    for (const node of outsiders) {
      const served = await servedBy(node);
      if (served !== undefined) {
        const state = node.core!.membership.current();
        violations.push({ kind: 'removed-member-served', message: `${node.id}, not a member at epoch ${finalEpoch} (it is at epoch ${state.epoch}: ${describeMembership(state)}), ${served}`, details: membershipLog.slice(-20) });
      }
    }
    // A member declared dead that runs again serves nothing.
    let deadMemberRan = false;
    for (const node of running.filter((n) => dead.has(n.id))) {
      deadMemberRan = true;
      const served = await servedBy(node);
      if (served !== undefined) violations.push({ kind: 'dead-member-served', message: `${node.id}, declared dead at epoch ${finalEpoch}, ${served}`, details: membershipLog.slice(-20) });
    }
    for (const node of live) {
      const core = node.core!;
      const backlog = core.peers.links().map((l) => core.repo.hints.stats(l.id).entries).reduce((a, b) => a + b, 0);
      if (backlog > 0) {
        const details = core.peers.links().map((l) => {
          const st = core.repo.hints.stats(l.id);
          return `to ${l.id}: ${st.entries} entries, oldest enqueued ${st.oldestEnqueuedAtMs === undefined ? '-' : node.clock.wallMs() - st.oldestEnqueuedAtMs} ms ago; link reachable=${l.reachable}, last error ${l.lastError ?? '-'}`;
        });
        violations.push({ kind: 'not-converged', message: `${node.id} still has ${backlog} replication-log entries after heal`, details });
      }
    }
    for (const u of unhandled) violations.push({ kind: 'node-error', message: `unhandled rejection: ${u}`, details: [] });
    const simulatedMs = scheduler.now;
    const tombstonesPurged = running.reduce((sum, n) => sum + n.core!.tombstones.purged, purgedByEarlierIncarnations);
    for (const node of running) await scheduler.runWhile(node.core!.stop(), scheduler.now + 30_000);
    return {
      seed,
      history: ops.map((o) => JSON.stringify(o)).join('\n'),
      trace,
      faultStepsAvailable: schedule.length,
      violations,
      anomalies: checked.anomalies,
      simulatedMs,
      events: scheduler.eventsRun,
      ops: ops.length,
      opsAcked: ops.filter((o) => o.outcome === 'ok').length,
      tombstonesPurged,
      membership: {
        markDeadOf: markDead?.id,
        markDeadHow: markDead?.how,
        markDeadCommitted: markDead !== undefined && declaredDead(markDead.id),
        markDeadAttempts: markDead?.attempts ?? 0,
        deadMemberRan,
        aliveProbes: { ...aliveProbes },
        finalEpoch,
        change:
          change === undefined
            ? undefined
            : {
                plan: change.plan,
                spare: spareId,
                target: change.target,
                committed: change.committed,
                refused: change.refused,
                attempts: change.attempts,
                completed: finalState.change === undefined && (finalState.lastChangeId ?? 0) > 0,
                cancelled: finalState.members.some((m) => m.id === spareId && m.state === 'removed') && change.plan === 'add-cancel',
                finalMembers: finalState.members.filter((m) => m.state !== 'removed').map((m) => m.id),
                cleanedUp: running.reduce((sum, n) => sum + n.core!.changes.cleanedUp, cleanedUpByEarlierIncarnations),
                strayChecks,
                straysAfterFirstCleanup,
                opsViaSpareAcked: ops.filter((o) => o.coordinator === spareId && o.outcome === 'ok').length,
              },
        log: membershipLog,
      },
    };
  } finally {
    process.off('unhandledRejection', onUnhandled);
    for (const node of nodes.values()) {
      if (node.core !== undefined) {
        node.clock.kill();
        await node.core.abandon().catch(() => {});
      }
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Every node's hash trees equal a rebuild from what its storage holds (anti-entropy's premise). */
function checkTreesMatchStorage(node: SimNode, keys: ReadonlySet<string>): Violation[] {
  const core = node.core!;
  // Over the ring the trees cover (the union ring while a change is in progress).
  const rebuilt = new DigestForest(core.membership.forestRing());
  for (const key of keys) {
    const k = Buffer.from(key);
    const stored = core.repo.getRecord(k);
    if (stored !== undefined) rebuilt.apply(murmur3x86_32(k, ringHashSeed), k, undefined, recordHeader(stored));
  }
  const out: Violation[] = [];
  for (let r = 0; r < rebuilt.rangeCount; r++) {
    if (!rebuilt.root(r).equals(core.forest().root(r))) {
      out.push({ kind: 'replicas-differ', message: `${node.id}: hash tree of range ${r} differs from a rebuild from its storage`, details: [] });
      break;
    }
  }
  return out;
}

type FaultKind = 'cut' | 'heal' | 'crash' | 'pause' | 'skew' | 'network' | 'isolate-long' | 'cut-long' | 'storage' | 'mark-dead' | 'mark-dead-alive' | 'member-change' | 'isolate';
interface FaultStep {
  readonly atMs: number;
  readonly kind: FaultKind;
  readonly description: string;
  readonly node?: string;
  readonly from?: string;
  readonly to?: string;
  readonly forMs?: number;
  readonly skewMs?: number;
  readonly conditions?: Partial<typeof calmNetwork>;
  /** mark-dead: the member is crashed for good, or cut off from every node until the heal (still running). */
  readonly how?: 'crash' | 'isolate';
  /** mark-dead of a crashed member: its disk is started again after the heal. */
  readonly restartAtEnd?: boolean;
  /** member-change: the plan, the member it removes or replaces, and its pauses (before the first command; before the second, from the first's commit or end). */
  readonly plan?: ChangePlanKind;
  readonly target?: string;
  readonly delayMs?: number;
  readonly secondAfterMs?: number;
  /** A fault aimed at the change: its node is whoever has the role when the step comes. */
  readonly role?: 'joiner' | 'driver' | 'leaver';
}

/** The seeded fault schedule: a step every 0.5-3 s of simulated time. */
function drawFaultSchedule(rng: Rng, ids: readonly string[], durationMs: number, none: boolean, graceMs: number): FaultStep[] {
  if (none) return [];
  const steps: FaultStep[] = [];
  const pick = () => ids[rng.nextInt(ids.length)]!;
  for (let at = 500 + rng.nextInt(1000); at < durationMs; at += 500 + rng.nextInt(2500)) {
    const draw = rng.nextInt(100);
    if (draw < 10 && at < durationMs / 2) {
      const node = pick();
      const forMs = graceMs + 2_000 + rng.nextInt(4_000);
      steps.push({ atMs: at, kind: 'isolate-long', node, forMs, description: `isolate ${node} for ${forMs} ms (longer than the tombstone grace)` });
    } else if (draw < 18 && at < durationMs / 2) {
      const from = pick();
      const to = ids.filter((id) => id !== from)[rng.nextInt(ids.length - 1)]!;
      const forMs = graceMs + 2_000 + rng.nextInt(6_000);
      steps.push({ atMs: at, kind: 'cut-long', from, to, forMs, description: `cut ${from} -> ${to} (one way) for ${forMs} ms (longer than the tombstone grace)` });
    } else if (draw < 25) {
      // A cut: one way, both ways between two nodes, or a node isolated.
      const a = pick();
      const b = ids.filter((id) => id !== a)[rng.nextInt(ids.length - 1)]!;
      const shape = rng.nextInt(3);
      if (shape === 0) steps.push({ atMs: at, kind: 'cut', from: a, to: b, description: `cut ${a} -> ${b} (one way)` });
      else if (shape === 1) {
        steps.push({ atMs: at, kind: 'cut', from: a, to: b, description: `cut ${a} -> ${b}` });
        steps.push({ atMs: at, kind: 'cut', from: b, to: a, description: `cut ${b} -> ${a}` });
      } else {
        for (const other of ids) {
          if (other === a) continue;
          steps.push({ atMs: at, kind: 'cut', from: a, to: other, description: `isolate ${a}: cut ${a} -> ${other}` });
          steps.push({ atMs: at, kind: 'cut', from: other, to: a, description: `isolate ${a}: cut ${other} -> ${a}` });
        }
      }
    } else if (draw < 40) steps.push({ atMs: at, kind: 'heal', description: 'heal every link' });
    else if (draw < 55) {
      const node = pick();
      const forMs = 300 + rng.nextInt(3000);
      // Half the restarts come back with the wall clock set back up to 40 s (a reboot before NTP
      // has run, a VM restored from a snapshot): only what the node persisted and learns from its
      // peers keeps its versions above those it issued before.
      const skewMs = rng.nextInt(2) === 0 ? undefined : -rng.nextInt(40_000);
      steps.push({ atMs: at, kind: 'crash', node, forMs, ...(skewMs === undefined ? {} : { skewMs }), description: `crash ${node} (SIGKILL), restart after ${forMs} ms${skewMs === undefined ? '' : ` with its wall clock at ${skewMs} ms off true time`}` });
    } else if (draw < 70) {
      const node = pick();
      const forMs = 300 + rng.nextInt(4000);
      steps.push({ atMs: at, kind: 'pause', node, forMs, description: `pause ${node} for ${forMs} ms` });
    } else if (draw < 85) {
      const node = pick();
      const skewMs = (rng.nextInt(2) === 0 ? -1 : 1) * rng.nextInt(40_000);
      steps.push({ atMs: at, kind: 'skew', node, skewMs, description: `${node}'s wall clock jumps to ${skewMs} ms off true time` });
    } else if (draw < 92) {
      const node = pick();
      const forMs = 500 + rng.nextInt(3_500);
      steps.push({ atMs: at, kind: 'storage', node, forMs, description: `${node}'s storage fails ${storageJobFailureRate * 100}% of write jobs and ${storageCommitFailureRate * 100}% of commits for ${forMs} ms` });
    } else {
      const conditions = { dropRate: rng.nextInt(20) / 100, duplicateRate: rng.nextInt(10) / 100, latencyMaxMs: 4 + rng.nextInt(40), spikeRate: rng.nextInt(5) / 100, spikeMs: 200 + rng.nextInt(2000) };
      steps.push({ atMs: at, kind: 'network', conditions, description: `network: drop ${conditions.dropRate}, duplicate ${conditions.duplicateRate}, latency up to ${conditions.latencyMaxMs} ms, spikes ${conditions.spikeRate} x ${conditions.spikeMs} ms` });
    }
  }
  return steps;
}

/**
 * The membership steps (their own random stream, so a seed that draws none keeps its fault
 * schedule step for step): in a share of seeds, with 3 or more nodes and enough left for QUORUM,
 * one member gone for good (crashed, or cut off from every node until the heal) and declared
 * dead once deadAfterSeconds have passed; in another share, a mark-dead of a member that is up
 * and reachable, which must be refused.
 */
function drawMembershipSteps(rng: Rng, ids: readonly string[], durationMs: number, none: boolean, deadAfterMs: number, replicationFactor: number): FaultStep[] {
  if (none || ids.length < 3) return [];
  const steps: FaultStep[] = [];
  const quorum = Math.floor(replicationFactor / 2) + 1;
  let live = ids;
  if (rng.nextDouble() < markDeadShare && ids.length - 1 >= quorum) {
    const node = ids[rng.nextInt(ids.length)]!;
    live = ids.filter((id) => id !== node);
    const atMs = 1_000 + rng.nextInt(Math.floor(durationMs / 2));
    const how = rng.nextInt(10) < 3 ? ('isolate' as const) : ('crash' as const);
    const forMs = deadAfterMs + 300 + rng.nextInt(1_500);
    const restartAtEnd = how === 'crash' && rng.nextInt(4) !== 0;
    const gone = how === 'crash' ? `crash ${node} for good${restartAtEnd ? ' (its disk restarted after the heal)' : ''}` : `cut ${node} off from every node until the heal`;
    steps.push({ atMs, kind: 'mark-dead', node, how, forMs, restartAtEnd, description: `${gone}, then after ${forMs} ms declare it dead (mark-dead, retried until it commits)` });
  }
  if (rng.nextDouble() < aliveProbeShare) {
    // Of the members that stay: the one declared dead is not reachable.
    const node = live[rng.nextInt(live.length)]!;
    const from = live.filter((id) => id !== node)[rng.nextInt(live.length - 1)]!;
    const atMs = 2_000 + rng.nextInt(Math.max(1, durationMs - 3_000));
    steps.push({ atMs, kind: 'mark-dead-alive', node, from, description: `mark-dead of ${node} (up and reachable) via ${from}: must be refused` });
  }
  return steps;
}

/**
 * The membership change of a run (a stream of its own, so a seed that draws none keeps every
 * other step), in a share of the seeds: with a member declared dead, its replace by the spare
 * (once declared dead), an add or an add then cancel; otherwise an add, an add then cancel, an
 * add then (once done) the remove of a member (the new one too), or with more members than
 * replicas a remove. Then up to 3 faults aimed at it within 8 s: its joiner crashed, paused or
 * cut off, its driver or its leaver crashed (whoever has the role when the step comes).
 */
function drawChangePlan(rng: Rng, ids: readonly string[], spare: string, durationMs: number, none: boolean, markDeadStep: FaultStep | undefined, replicationFactor: number): FaultStep[] {
  if (none || ids.length < 3 || rng.nextDouble() >= changeShare) return [];
  const d = rng.nextInt(100);
  let plan: ChangePlanKind;
  if (markDeadStep !== undefined) plan = d < 50 ? 'replace' : d < 75 ? 'add' : 'add-cancel';
  else if (ids.length - 1 >= replicationFactor) plan = d < 25 ? 'add' : d < 50 ? 'remove' : d < 70 ? 'add-remove' : 'add-cancel';
  else plan = d < 30 ? 'add' : d < 65 ? 'add-remove' : 'add-cancel';
  const atMs = plan === 'replace' ? markDeadStep!.atMs + markDeadStep!.forMs! : 1_000 + rng.nextInt(Math.floor(durationMs / 2));
  const pool = plan === 'add-remove' ? [...ids, spare] : ids;
  const target = plan === 'replace' ? markDeadStep!.node : plan === 'remove' || plan === 'add-remove' ? pool[rng.nextInt(pool.length)] : undefined;
  const delayMs = 200 + rng.nextInt(800);
  const secondAfterMs = plan === 'add-cancel' ? rng.nextInt(700) : rng.nextInt(1_000);
  const what =
    plan === 'add'
      ? `add ${spare}`
      : plan === 'add-cancel'
        ? `add ${spare}, cancel it ${secondAfterMs} ms after it commits`
        : plan === 'add-remove'
          ? `add ${spare}, once done remove ${target}`
          : plan === 'remove'
            ? `remove ${target}`
            : `replace ${target} by ${spare} once declared dead`;
  const steps: FaultStep[] = [{ atMs, kind: 'member-change', plan, ...(target === undefined ? {} : { target }), delayMs, secondAfterMs, description: `membership change: ${what} (${plan === 'remove' ? '' : `${spare} started with cluster.join, `}proposed via a random member, retried until it commits)` }];
  const aimed = rng.nextInt(4);
  for (let i = 0; i < aimed; i++) {
    const at = atMs + 300 + rng.nextInt(8_000);
    const draw = rng.nextInt(100);
    const forMs = 300 + rng.nextInt(3_000);
    if (at >= durationMs - 500) continue;
    if (draw < 40) steps.push({ atMs: at, kind: 'crash', role: 'joiner', forMs, description: `crash the joiner (SIGKILL), restart after ${forMs} ms` });
    else if (draw < 55) steps.push({ atMs: at, kind: 'pause', role: 'joiner', forMs, description: `pause the joiner for ${forMs} ms` });
    else if (draw < 70) steps.push({ atMs: at, kind: 'isolate', role: 'joiner', forMs, description: `cut the joiner off from every node for ${forMs} ms` });
    else if (draw < 90) steps.push({ atMs: at, kind: 'crash', role: 'driver', forMs, description: `crash the change's driver (SIGKILL), restart after ${forMs} ms` });
    else steps.push({ atMs: at, kind: 'crash', role: 'leaver', forMs, description: `crash the member being removed (SIGKILL), restart after ${forMs} ms` });
  }
  return steps.sort((a, b) => a.atMs - b.atMs);
}

/** The driver of a change (membership-changes.ts driverOf): the lowest-id live member normal in both rings. */
function driverOf(state: MembershipState): string | undefined {
  return state.members.find((m) => m.state === 'normal' && m.dead !== true)?.id;
}

/** The fault schedule and the membership steps in time order (stable: at one time, faults first). */
function mergeSteps(faults: FaultStep[], membership: FaultStep[]): FaultStep[] {
  if (membership.length === 0) return faults;
  return [...faults, ...membership].sort((a, b) => a.atMs - b.atMs);
}

/** A membership state as the agreement compares it, without peer addresses (each node dials its own). */
function canonicalMembership(state: MembershipState): string {
  const members = [...state.members].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)).map((m) => [m.id, m.state, m.tokensOf ?? '', m.dead === true]);
  const change = state.change === undefined ? null : [state.change.id, state.change.kind, state.change.phase, [...state.change.subjects]];
  return JSON.stringify([state.formatVersion, state.epoch, members, change, state.lastChangeId ?? 0]);
}

function describeMembership(state: MembershipState): string {
  const dead = state.members.filter((m) => m.dead === true).map((m) => m.id);
  return `epoch ${state.epoch}, ${state.members.filter((m) => m.state !== 'removed').length} members${dead.length === 0 ? '' : `, dead: ${dead.join(', ')}`}${state.change === undefined ? '' : `, change ${state.change.id} (${state.change.kind}, ${state.change.phase})`}`;
}

function simSleep(scheduler: SimScheduler, ms: number): Promise<void> {
  return new Promise((resolve) => scheduler.at(scheduler.now + ms, resolve));
}

/** `call`'s outcome, or a give-up after `ms` of simulated time (its coordinator crashed or froze). */
function withGiveUp<T>(scheduler: SimScheduler, call: Promise<T>, ms: number): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> {
  return new Promise((resolve) => {
    let done = false;
    const timer = scheduler.at(scheduler.now + ms, () => {
      if (done) return;
      done = true;
      resolve({ ok: false, error: new Error(`no answer within ${ms} ms (coordinator crashed or paused)`) });
    });
    call.then(
      (value) => {
        if (done) return;
        done = true;
        timer.cancel();
        resolve({ ok: true, value });
      },
      (error: unknown) => {
        if (done) return;
        done = true;
        timer.cancel();
        resolve({ ok: false, error });
      },
    );
  });
}
