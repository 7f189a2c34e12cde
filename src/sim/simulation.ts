import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { deriveSeed, Rng } from '../common/rng.js';
import { DigestForest } from '../cluster/digest-tree.js';
import { murmur3x86_32 } from '../cluster/hash.js';
import { ringHashSeed } from '../cluster/ring.js';
import { resolveConfig } from '../config/load-config.js';
import { RequestDeadline } from '../replication/deadline.js';
import { InvalidRequestError } from '../replication/errors.js';
import { composeNodeCore, type NodeCore } from '../server/node-core.js';
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
}

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
  const network = new SimNetwork(scheduler, networkRng);
  const logger = pino({ level: 'silent' });
  const dir = mkdtempSync(join(tmpdir(), `kvstore-sim-${seed}-`));
  const ids = Array.from({ length: nodeCount }, (_, i) => `n${i + 1}`);
  const members = ids.map((id, i) => ({ id, peer: `${id}.sim:${7000 + i}` }));
  const nodes = new Map<string, SimNode>();
  const violations: Violation[] = [];
  // Rejections nobody handled, from code under simulation: bugs (the process policy counts them in a node).
  const unhandled: string[] = [];
  const onUnhandled = (reason: unknown): void => {
    unhandled.push(String((reason as Error)?.stack ?? reason).split('\n').slice(0, 3).join(' | '));
  };
  process.on('unhandledRejection', onUnhandled);
  let purgedByEarlierIncarnations = 0;

  const configOf = (id: string) =>
    resolveConfig({
      nodeId: id,
      dataDir: join(dir, id),
      logLevel: 'silent',
      cluster: { members, replicationFactor: Math.min(3, nodeCount) },
      timeouts: { requestMs, peerCallMs: 1_000 },
      replication: { retryMinMs: 50, retryMaxMs: 1_000, probeIntervalMs: 500 },
      antiEntropy: { intervalSeconds: 5, maxRecordsPerSecond: 20_000 },
      tombstones: { graceSeconds },
    });

  const storageFaultsOf = (node: SimNode): StorageFaults => {
    const troubled = () => scheduler.now < node.storageTroubleUntil;
    return {
      failJob: () => troubled() && storageRng.nextDouble() < storageJobFailureRate,
      failCommit: () => troubled() && storageRng.nextDouble() < storageCommitFailureRate,
    };
  };
  const startNode = async (node: SimNode): Promise<void> => {
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
    endpoint.service = core.peerService;
    // As a real start: the clock is seeded from the peers before the node coordinates anything.
    await scheduler.settleOn(core.seedClockFromPeers(), 5_000);
    core.start();
    node.up = true;
  };
  const crashNode = async (node: SimNode): Promise<void> => {
    node.up = false;
    node.clock.kill();
    node.endpoint.service = undefined;
    const core = node.core;
    node.core = undefined;
    purgedByEarlierIncarnations += core?.tombstones.purged ?? 0;
    node.closing.abort();
    if (core !== undefined) await core.abandon();
  };

  try {
    for (const id of ids) {
      const node: SimNode = { id, dataDir: join(dir, id), clock: new SimClock(scheduler), endpoint: { incarnation: 0, clock: new SimClock(scheduler), service: undefined }, core: undefined, up: false, incarnation: 0, closing: new AbortController(), storageTroubleUntil: 0 };
      nodes.set(id, node);
    }
    for (const node of nodes.values()) await startNode(node);

    // The workload: each client owns its keys and runs its operations one after the other.
    const ops: Op[] = [];
    const t0 = scheduler.now;
    let loadRunning = true;
    const clientLoops: Promise<void>[] = [];
    /** One operation by client `client` through a random up node's coordinator, recorded in `ops`. */
    const runOp = async (rng: Rng, client: number, workload: Op['workload'], kind: Op['kind'], key: string, value: string | undefined): Promise<Op | undefined> => {
      // A client cannot tell a paused node from a slow one: it may pick one (a crashed one
      // refuses connections, so it is not picked).
      const candidates = [...nodes.values()].filter((n) => n.up && n.core !== undefined);
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
              : core.coordinator.write(Buffer.from(key), Buffer.from(value ?? ''), kind === 'delete', 'quorum', deadline);
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
    const schedule = drawFaultSchedule(faultRng, ids, durationMs, options.noFaults === true, graceSeconds * 1000);
    const applied = options.faultSteps === undefined ? schedule : schedule.slice(0, options.faultSteps);
    const trace: string[] = [];
    for (const step of applied) {
      scheduler.at(t0 + step.atMs, () => {
        trace.push(`${step.atMs} ms: ${step.description}`);
        void applyFault(step);
      });
    }
    const applyFault = async (step: FaultStep): Promise<void> => {
      const node = step.node === undefined ? undefined : nodes.get(step.node);
      switch (step.kind) {
        case 'cut':
          network.cut(step.from!, step.to!);
          break;
        case 'heal':
          network.healAll();
          break;
        case 'isolate-long':
          // Longer than the tombstone grace: deletes made meanwhile become purgeable while this
          // node, which missed them, is away. Heal steps do not end it; it ends on its own.
          for (const other of ids) {
            if (other === step.node) continue;
            network.cutLong(step.node!, other);
            network.cutLong(other, step.node!);
          }
          scheduler.at(scheduler.now + step.forMs!, () => {
            for (const other of ids) {
              if (other === step.node) continue;
              network.restoreLong(step.node!, other);
              network.restoreLong(other, step.node!);
            }
          });
          break;
        case 'cut-long':
          // One way, longer than the grace: the sender's log holds writes for the peer while
          // both still answer tombstone GC (which needs every member to answer, not every path).
          network.cutLong(step.from!, step.to!);
          scheduler.at(scheduler.now + step.forMs!, () => network.restoreLong(step.from!, step.to!));
          break;
        case 'crash':
          if (node !== undefined && node.up) {
            await crashNode(node);
            scheduler.at(scheduler.now + step.forMs!, () => {
              if (step.skewMs !== undefined) node.clock.skewMs = Math.min(node.clock.skewMs, step.skewMs);
              void startNode(node);
            });
          }
          break;
        case 'pause':
          if (node !== undefined && node.up && !node.clock.isPaused) {
            node.clock.pause();
            const paused = node.clock;
            scheduler.at(scheduler.now + step.forMs!, () => paused.resume());
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

    await scheduler.runUntil(t0 + durationMs);
    loadRunning = false;
    await scheduler.runWhile(Promise.all(clientLoops), scheduler.now + clientGiveUpMs * 2);

    // Heal: every link, calm network, every node up and running; then converge.
    network.healEverything();
    network.conditions = { ...calmNetwork };
    for (const node of nodes.values()) if (node.clock.isPaused) node.clock.resume();
    await scheduler.runUntil(scheduler.now + 5_000);
    for (const node of nodes.values()) if (!node.up && node.core === undefined) await startNode(node);
    await scheduler.runUntil(scheduler.now + convergeMs);
    for (const node of nodes.values()) await scheduler.runWhile(node.core!.antiEntropy.repairAll(), scheduler.now + 60_000);
    await scheduler.runUntil(scheduler.now + 2_000);

    // Check: the history against the replicas' final contents, replicas identical, trees rebuilt.
    const keys = new Set(ops.map((o) => o.key));
    const replicas = new Map<string, ReplicaContents>();
    for (const node of nodes.values()) {
      const contents: ReplicaContents = new Map();
      for (const key of keys) {
        const stored = node.core!.repo.getRecord(Buffer.from(key));
        if (stored === undefined) continue;
        const r = decodeRecord(stored);
        contents.set(key, { tombstone: r.tombstone, value: Buffer.from(r.value).toString('utf8'), version: r.version });
      }
      replicas.set(node.id, contents);
      violations.push(...checkTreesMatchStorage(node, keys));
    }
    const byKey = new Map<string, Op[]>();
    for (const op of ops) (byKey.get(op.key) ?? byKey.set(op.key, []).get(op.key)!).push(op);
    // With more nodes than replicationFactor, only a key's replicas are judged (the others never hold it).
    const ring = nodes.get(ids[0]!)!.core!.ring();
    const replicasOf = (key: string) => ring.preferenceList(Buffer.from(key), Math.min(3, nodeCount));
    const checked = checkHistory(byKey, replicas, { replicasOf });
    violations.push(...checked.violations, ...checkReplicasIdentical(byKey, replicas, 20, replicasOf));
    for (const node of nodes.values()) {
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
    const tombstonesPurged = [...nodes.values()].reduce((sum, n) => sum + n.core!.tombstones.purged, purgedByEarlierIncarnations);
    for (const node of nodes.values()) await scheduler.runWhile(node.core!.stop(), scheduler.now + 30_000);
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
  const rebuilt = new DigestForest(core.ring());
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

type FaultKind = 'cut' | 'heal' | 'crash' | 'pause' | 'skew' | 'network' | 'isolate-long' | 'cut-long' | 'storage';
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
