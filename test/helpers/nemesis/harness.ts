import { writeFileSync } from 'node:fs';
import { KvClient } from '../../../src/client/index.js';
import { makeTempDir, removeTempDir } from '../node-process.js';
import { readReplica, seededRandom, type ReplicaContents } from '../replica-state.js';
import { TcpProxy } from '../tcp-proxy.js';
import { type Anomaly, checkHistory, checkReplicasIdentical, type Violation } from './checker.js';
import { History, type Op, type Workload } from './history.js';
import { type ErrorLog, NemesisNode, type UnexpectedExit } from './node.js';
import { describeFault, type Fault, makeSchedule, type ScheduleStep, storageFaultsValue } from './schedule.js';

/**
 * The nemesis: 3 real node processes (replication factor 3, every peer link through its own
 * TcpProxy), 100+ concurrent clients, a seeded schedule of crashes, pauses, partitions and clock
 * skew, every operation recorded, then heal, drain, repair, verify, and the history checked
 * against the replicas' final contents (checker.ts). Run from test/cluster/nemesis.test.ts
 * (short) and scripts/nemesis.ts (`npm run nemesis -- --duration <s> --seed <n>`).
 */
export interface NemesisOptions {
  readonly seed: number;
  /** How long the workload and the fault schedule run. */
  readonly durationMs: number;
  /** Concurrent clients; a third run each workload (at least 3). */
  readonly clients: number;
  /** Cap on the operations of one client (a put and the QUORUM read after it are two). */
  readonly opsPerClientMax: number;
  /** Client deadline of every call. */
  readonly deadlineMs?: number;
  /** Each client pauses up to this long between two operations. */
  readonly thinkMsMax?: number;
  /** Writes the history (one JSON object per line: ops, faults, exits) here when set. */
  readonly historyFile?: string;
  /** Keeps the cluster's temp dir (configs, data dirs) instead of removing it. */
  readonly keepDir?: boolean;
  /** Report "an indeterminate write took effect after a later acknowledged one" as a violation (checker.ts, CheckOptions). */
  readonly lateIsViolation?: boolean;
  /**
   * Bound on the final phase (heal, reachability, drain, repair rounds, verify): each of its
   * waits gets at most what is left of it (default 150 s). The graceful stops come on top (15 s).
   */
  readonly finalPhaseMs?: number;
  /** Progress lines (default: console.log). */
  readonly log?: (line: string) => void;
  /**
   * tombstones.graceSeconds of the nodes (default 3600: nothing is purged during a run). A short
   * grace (at least 10, and above the schedule's 20 s clock skew) lets tombstones be purged while
   * the faults run, which the purge rule must survive; a purged delete reads as absent.
   */
  readonly graceSeconds?: number;
}

export interface NemesisResult {
  readonly seed: number;
  readonly schedule: readonly ScheduleStep[];
  readonly violations: readonly Violation[];
  readonly anomalies: readonly Anomaly[];
  readonly history: History;
  readonly unexpectedExits: readonly UnexpectedExit[];
  readonly wallMs: number;
  /** A few lines: seed, operations by kind and outcome, faults, checks. */
  readonly summary: string;
  /** Every violation with its key's operations and each replica's record. */
  readonly report: string;
  readonly dir: string;
}

/** Members of the nemesis cluster. */
const nodeIds = ['n1', 'n2', 'n3'] as const;
const deadlineMsDefault = 2500;
const thinkMsMaxDefault = 50;
/** Connections per node of the shared SDK client the workload uses. */
const channelsPerNode = 4;
/** Extra pause of a client after a call no node took (its coordinator is down). */
const unreachablePauseMs = 100;
/** A sequential client moves to a fresh key after this many writes (more keys, shorter histories). */
const sequentialWritesPerKey = 40;
/** After an unexpected exit, the supervisor restarts the node after this pause ... */
const restartAfterCrashMs = 1000;
/** ... at most this many times per node (a node that cannot start is reported, not retried forever). */
const restartsAfterCrashMax = 10;
/** Deadlines of the final phase's waits. */
const finalPhaseMsDefault = 150_000;
const reachableDeadlineMs = 30_000;
const drainDeadlineMs = 60_000;
const repairDeadlineMs = 60_000;
const repairRoundsMax = 3;
/** Error-level log lines kept (they are grouped by node and message in the report). */
const errorLogsMax = 10_000;
/** In the message of every failure KVSTORE_TEST_STORAGE_FAULTS injects (InjectedStorageError, src/storage/repository.ts). */
const injectedStorageFailureText = 'simulated storage failure';
/** How many violations of one kind the report shows in full. */
const reportFullPerKind = 5;

/** Node config of the nemesis cluster (merged into each node's generated config). */
export function nemesisNodeConfig(graceSeconds = 3600): Record<string, unknown> {
  return {
    logLevel: 'info',
    replication: { retryMinMs: 20, retryMaxMs: 500, probeIntervalMs: 250 },
    timeouts: { requestMs: 5_000, peerCallMs: 1_000 },
    // Frequent background exchanges; a high rate so the final repair is quick.
    antiEntropy: { intervalSeconds: 5, maxRecordsPerSecond: 200_000 },
    // By default nothing is purged during a run: every delete stays a tombstone the checker sees.
    tombstones: { graceSeconds },
  };
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, Math.max(0, ms));
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });

/** Polls `check` until truthy or the deadline; answers the last error/falsy result as a string on timeout. */
async function pollUntil(check: () => Promise<string | true>, deadlineMs: number): Promise<true | string> {
  const until = Date.now() + deadlineMs;
  let last = 'not checked';
  for (;;) {
    try {
      const r = await check();
      if (r === true) return true;
      last = r;
    } catch (err) {
      last = (err as Error).message;
    }
    if (Date.now() > until) return last;
    await sleep(200);
  }
}

/** The cluster the nemesis works on: nodes, proxies, one SDK client per node, a crash supervisor. */
class NemesisCluster {
  readonly dir = makeTempDir('kvstore-nemesis-');
  readonly nodes = new Map<string, NemesisNode>();
  private readonly proxies = new Map<string, TcpProxy>();
  private readonly clients = new Map<string, KvClient>();
  /** Per node, an SDK client with coalescing off: one unary Put, Get or Delete per operation (the node's direct unary path). */
  private readonly unaryClients = new Map<string, KvClient>();
  private readonly retiredClients: KvClient[] = [];
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly crashRestarts = new Map<string, number>();
  private readonly timers = new Set<NodeJS.Timeout>();
  readonly unexpectedExits: UnexpectedExit[] = [];
  readonly errorLogs: ErrorLog[] = [];
  /** Error-level lines caused by the storage fault's injected failures (not violations). */
  injectedStorageErrorLogs = 0;
  /** Once set, exits are still recorded but nodes are no longer restarted by the supervisor. */
  stopping = false;

  constructor(
    private readonly history: History,
    private readonly deadlineMs: number,
    private readonly log: (line: string) => void,
    private readonly graceSeconds: number | undefined,
  ) {}

  get ids(): readonly string[] {
    return nodeIds;
  }

  async init(): Promise<void> {
    for (const from of nodeIds) for (const to of nodeIds) if (from !== to) this.proxies.set(`${from}->${to}`, await new TcpProxy(undefined).start());
    for (const id of nodeIds) {
      const members = nodeIds.map((other) => ({ id: other, peer: other === id ? '127.0.0.1:0' : this.proxy(id, other).address }));
      const config = { peerListen: '127.0.0.1:0', cluster: { members, replicationFactor: 3 }, ...nemesisNodeConfig(this.graceSeconds) };
      this.nodes.set(
        id,
        NemesisNode.create(
          this.dir,
          id,
          config,
          () => this.history.now(),
          (exit) => this.onUnexpectedExit(exit),
          (log) => {
            // What a node logs because its storage fails on purpose (the storage fault) is expected.
            if (log.line.includes(injectedStorageFailureText)) this.injectedStorageErrorLogs++;
            else if (this.errorLogs.length < errorLogsMax) this.errorLogs.push(log);
          },
        ),
      );
    }
    await Promise.all(nodeIds.map((id) => this.startNode(id)));
  }

  node(id: string): NemesisNode {
    const node = this.nodes.get(id);
    if (node === undefined) throw new Error(`no node ${id}`);
    return node;
  }

  proxy(from: string, to: string): TcpProxy {
    const proxy = this.proxies.get(`${from}->${to}`);
    if (proxy === undefined) throw new Error(`no link ${from}->${to}`);
    return proxy;
  }

  /**
   * The current SDK client of node `id` (replaced when the node restarts on a new port); with
   * `unary`, the one that sends each operation as its own unary call.
   */
  client(id: string, unary = false): KvClient {
    const client = (unary ? this.unaryClients : this.clients).get(id);
    if (client === undefined) throw new Error(`no client for ${id}`);
    return client;
  }

  /** Runs lifecycle changes of one node one at a time. */
  withNode<T>(id: string, fn: (node: NemesisNode) => Promise<T>): Promise<T> {
    const previous = this.locks.get(id) ?? Promise.resolve();
    const next = previous.then(
      () => fn(this.node(id)),
      () => fn(this.node(id)),
    );
    this.locks.set(
      id,
      next.catch(() => undefined),
    );
    return next;
  }

  /** Starts node `id` (with test-hook env), points the links towards it at its new peer port, replaces its client. */
  async startNode(id: string, env: Record<string, string> = {}): Promise<void> {
    const node = this.node(id);
    await node.start(env);
    for (const other of nodeIds) if (other !== id) this.proxy(other, id).setTarget(node.peerListen);
    for (const [clients, coalesce] of [
      [this.clients, true],
      [this.unaryClients, false],
    ] as const) {
      const old = clients.get(id);
      clients.set(id, new KvClient({ endpoints: [node.listen], deadlineMs: this.deadlineMs, maxAttempts: 1, channelsPerEndpoint: channelsPerNode, coalesce }));
      if (old !== undefined) {
        this.retiredClients.push(old);
        // Calls still in flight on the old client end within their deadline; then close it.
        this.later(this.deadlineMs + 1000, () => old.close());
      }
    }
  }

  /** Restarts a node that was not asked to exit, a bounded number of times. */
  private onUnexpectedExit(exit: UnexpectedExit): void {
    this.unexpectedExits.push(exit);
    this.log(`!! ${exit.node} (pid ${exit.pid}) exited unasked while ${exit.phase} (code ${exit.code}, signal ${exit.signal}) at ${(exit.atMs / 1000).toFixed(1)} s`);
    if (this.stopping) return;
    this.scheduleCrashRestart(exit.node);
  }

  private scheduleCrashRestart(id: string): void {
    const count = (this.crashRestarts.get(id) ?? 0) + 1;
    this.crashRestarts.set(id, count);
    if (count > restartsAfterCrashMax) return;
    this.later(restartAfterCrashMs, () => {
      if (this.stopping) return;
      void this.withNode(id, async (node) => {
        if (node.running || this.stopping) return;
        const exitsBefore = this.unexpectedExits.length;
        try {
          await this.startNode(id, node.env);
          this.log(`   ${id} restarted after its unasked exit`);
        } catch (err) {
          this.log(`   ${id} failed to restart: ${(err as Error).message.split('\n')[0]}`);
          // An exit before listening was reported (and rescheduled) by onUnexpectedExit already.
          if (this.unexpectedExits.length === exitsBefore) this.scheduleCrashRestart(id);
        }
      });
    });
  }

  private later(ms: number, fn: () => void): void {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      fn();
    }, ms);
    this.timers.add(timer);
  }

  /** Breaks the directed link from -> to. */
  cut(from: string, to: string, mode: 'cut' | 'blackhole' = 'cut'): void {
    const p = this.proxy(from, to);
    if (mode === 'cut') p.cut();
    else p.blackhole();
  }

  healAll(): void {
    for (const p of this.proxies.values()) p.heal();
  }

  /** Tears everything down: every node process (SIGKILL if still running), proxies, clients, timers. */
  async destroy(keepDir: boolean): Promise<void> {
    this.stopping = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const c of [...this.clients.values(), ...this.unaryClients.values(), ...this.retiredClients]) c.close();
    await Promise.all([...this.nodes.values()].map((n) => n.kill()));
    await Promise.all([...this.proxies.values()].map((p) => p.close()));
    if (!keepDir) removeTempDir(this.dir);
  }
}

/** One logical client: a workload loop over its own keys, round-robin over the coordinators. */
class Worker {
  private rr: number;
  private ops = 0;
  private unreachableSinceLastOp = false;
  private readonly random: () => number;
  /** Odd-numbered clients send one unary call per operation, the others go through OperationStream: both paths under the same faults. */
  private readonly unary: boolean;

  constructor(
    readonly index: number,
    readonly workload: Workload,
    private readonly cluster: NemesisCluster,
    private readonly history: History,
    private readonly deadlineMs: number,
    private readonly thinkMsMax: number,
    seed: number,
  ) {
    this.rr = index % nodeIds.length;
    this.random = seededRandom(seed);
    this.unary = index % 2 === 1;
  }

  private nextCoordinator(): string {
    const id = nodeIds[this.rr % nodeIds.length]!;
    this.rr++;
    return id;
  }

  private get name(): string {
    return `c${String(this.index).padStart(3, '0')}`;
  }

  async run(stopAt: number, opsMax: number): Promise<void> {
    const more = () => Date.now() < stopAt && this.ops < opsMax;
    let n = 0;
    let seqKey = 0;
    let seqWrite = 0;
    await sleep(this.random() * 200); // do not start all clients in the same millisecond
    while (more()) {
      n++;
      if (this.workload === 'unique') {
        const key = `u:${this.name}:${n}`;
        if ((await this.put(key, key)) && more()) await this.get(key);
      } else if (this.workload === 'put-delete') {
        const key = `d:${this.name}:${n}`;
        if ((await this.put(key, key)) && more()) await this.get(key);
        if (!more()) break;
        // The delete is sent whatever the put's outcome: after an indeterminate put, an
        // acknowledged delete may still lose to the put arriving late (an anomaly, not a violation).
        if ((await this.del(key)) && more()) await this.get(key);
      } else {
        if (seqWrite >= sequentialWritesPerKey) {
          seqKey++;
          seqWrite = 0;
        }
        seqWrite++;
        const key = `s:${this.name}:${seqKey}`;
        if ((await this.put(key, `${key}:${seqWrite}`)) && more()) await this.get(key);
      }
      if (this.thinkMsMax > 0) await sleep(this.random() * this.thinkMsMax);
      // A coordinator that is down fails calls at once: do not spin through it.
      if (this.unreachableSinceLastOp) await sleep(unreachablePauseMs);
      this.unreachableSinceLastOp = false;
    }
  }

  private async put(key: string, value: string): Promise<boolean> {
    const coordinator = this.nextCoordinator();
    const op = this.invoke('put', key, coordinator, value);
    try {
      const r = await this.cluster.client(coordinator, this.unary).put(key, value, { consistency: 'quorum', deadlineMs: this.deadlineMs });
      this.history.complete(op, r.found ? (r.oldValue?.toString('utf8') ?? '') : null);
      return true;
    } catch (err) {
      this.failed(op, err);
      return false;
    }
  }

  private async del(key: string): Promise<boolean> {
    const coordinator = this.nextCoordinator();
    const op = this.invoke('delete', key, coordinator);
    try {
      const found = await this.cluster.client(coordinator, this.unary).delete(key, { consistency: 'quorum', deadlineMs: this.deadlineMs });
      this.history.complete(op, found ? { live: true } : null);
      return true;
    } catch (err) {
      this.failed(op, err);
      return false;
    }
  }

  private async get(key: string): Promise<void> {
    const coordinator = this.nextCoordinator();
    const op = this.invoke('get', key, coordinator);
    try {
      const value = await this.cluster.client(coordinator, this.unary).getString(key, { consistency: 'quorum', deadlineMs: this.deadlineMs });
      this.history.complete(op, value ?? null);
    } catch (err) {
      this.failed(op, err);
    }
  }

  private failed(op: Op, err: unknown): void {
    this.history.fail(op, err);
    if (op.unreachable) this.unreachableSinceLastOp = true;
  }

  private invoke(kind: Op['kind'], key: string, coordinator: string, value?: string): Op {
    this.ops++;
    return this.history.invoke({ client: this.index, workload: this.workload, kind, key, coordinator, ...(value !== undefined ? { value } : {}) });
  }
}

/** A nemesis run. `execute()` once; `cleanup()` (idempotent) stops every process it started. */
export class NemesisRun {
  readonly history = new History();
  private cluster: NemesisCluster | undefined;
  private readonly stopFaults = new AbortController();
  private readonly log: (line: string) => void;
  private readonly deadlineMs: number;
  readonly schedule: ScheduleStep[];
  private readonly faultCounts = new Map<string, number>();
  private readonly notes: string[] = [];
  private cleaned = false;
  /** When the final phase must be over (set when it starts). */
  private finalUntil = Number.POSITIVE_INFINITY;

  constructor(readonly options: NemesisOptions) {
    if (options.clients < 3) throw new Error('the nemesis needs at least 3 clients (one per workload)');
    this.log = options.log ?? ((line) => console.log(line));
    this.deadlineMs = options.deadlineMs ?? deadlineMsDefault;
    this.schedule = makeSchedule(options.seed, options.durationMs, nodeIds);
  }

  async execute(): Promise<NemesisResult> {
    const { seed } = this.options;
    const startedAt = Date.now();
    this.log(`nemesis seed ${seed} (replay with KVSTORE_TEST_SEED=${seed})`);
    this.log(`nemesis: ${this.options.clients} clients, ${(this.options.durationMs / 1000).toFixed(0)} s, ${this.schedule.length} faults scheduled`);
    const cluster = (this.cluster = new NemesisCluster(this.history, this.deadlineMs, (l) => this.log(l), this.options.graceSeconds));
    await cluster.init();
    this.log(`nemesis: cluster up in ${cluster.dir}`);

    // Workload and faults.
    const workloadStart = Date.now();
    const stopAt = workloadStart + this.options.durationMs;
    const workloads: Workload[] = ['unique', 'put-delete', 'sequential'];
    const workers = Array.from(
      { length: this.options.clients },
      (_, i) => new Worker(i, workloads[i % 3]!, cluster, this.history, this.deadlineMs, this.options.thinkMsMax ?? thinkMsMaxDefault, (seed ^ Math.imul(i + 1, 0x9e3779b1)) >>> 0),
    );
    const running = workers.map((w) => w.run(stopAt, this.options.opsPerClientMax));
    const faults = this.runSchedule(workloadStart);
    await Promise.all(running);
    this.stopFaults.abort();
    await faults;
    this.log(`nemesis: workload done at ${(this.history.now() / 1000).toFixed(1)} s: ${this.history.ops.length} operations`);

    // Heal, drain, repair, verify, stop, read every replica, check.
    this.finalUntil = Date.now() + (this.options.finalPhaseMs ?? finalPhaseMsDefault);
    const violations: Violation[] = [];
    await this.healEverything(violations);
    const repairRounds = await this.converge(violations);
    cluster.stopping = true;
    // A node that is down already (it crashed: reported as an unasked exit) has nothing to stop.
    const wasRunning = nodeIds.map((id) => cluster.node(id).running);
    const stops = await Promise.all(nodeIds.map((id) => cluster.node(id).stop()));
    for (const [i, id] of nodeIds.entries()) {
      const stopped = stops[i]!;
      if (wasRunning[i] && (stopped.code !== 0 || stopped.forced)) {
        violations.push({
          kind: 'unclean-stop',
          message: `${id} did not stop cleanly on SIGTERM (code ${stopped.code}, signal ${stopped.signal}${stopped.forced ? ', killed after the stop deadline' : ''})`,
          details: cluster.node(id).output(30).split('\n'),
        });
      }
    }
    const replicas = new Map<string, ReplicaContents>();
    for (const id of nodeIds) {
      try {
        replicas.set(id, await readReplica(cluster.node(id).dataDir));
      } catch (err) {
        violations.push({ kind: 'not-converged', message: `could not read ${id}'s replica: ${(err as Error).message}`, details: [] });
      }
    }
    const byKey = this.history.byKey();
    for (const exit of cluster.unexpectedExits) {
      violations.push({
        kind: 'unexpected-exit',
        message: `${exit.node} (pid ${exit.pid}) exited unasked while ${exit.phase} at ${(exit.atMs / 1000).toFixed(1)} s: code ${exit.code}, signal ${exit.signal}`,
        details: [...exit.stderrTail.slice(-15), ...exit.stdoutTail.slice(-15)],
      });
    }
    violations.push(...errorLogViolations(cluster.errorLogs));
    violations.push(...checkReplicasIdentical(byKey, replicas));
    const checked = checkHistory(byKey, replicas, { lateIsViolation: this.options.lateIsViolation === true });
    violations.push(...checked.violations);
    if (this.options.historyFile !== undefined) this.writeHistory(this.options.historyFile);

    let summary = this.summarize(violations, checked.anomalies, checked.keysChecked, checked.keysWithAckedWrites, repairRounds, Date.now() - startedAt);
    // How much the tombstone purge did (only a run with a short grace purges anything).
    let deletedKeys = 0;
    let purgedKeys = 0;
    for (const [key, ops] of byKey) {
      if (!ops.some((op) => op.kind === 'delete' && op.outcome !== 'failed')) continue;
      deletedKeys++;
      if ([...replicas.values()].every((r) => !r.has(key))) purgedKeys++;
    }
    summary += `\ndeleted keys: ${deletedKeys}, of which purged on every replica by the end: ${purgedKeys} (tombstones.graceSeconds ${this.options.graceSeconds ?? 3600})`;
    return {
      seed,
      schedule: this.schedule,
      violations,
      anomalies: checked.anomalies,
      history: this.history,
      unexpectedExits: cluster.unexpectedExits,
      wallMs: Date.now() - startedAt,
      summary,
      report: formatReport(violations, checked.anomalies),
      dir: cluster.dir,
    };
  }

  /** Stops every process this run started and removes its temp dir (unless keepDir). Idempotent. */
  async cleanup(): Promise<void> {
    if (this.cleaned) return;
    this.cleaned = true;
    this.stopFaults.abort();
    await this.cluster?.destroy(this.options.keepDir === true);
  }

  private async runSchedule(t0: number): Promise<void> {
    const signal = this.stopFaults.signal;
    const cluster = this.cluster!;
    for (const step of this.schedule) {
      await sleep(t0 + step.atMs - Date.now(), signal);
      if (signal.aborted) return;
      const event = this.history.fault(describeFault(step.fault));
      this.log(`   ${(this.history.now() / 1000).toFixed(1)} s: ${event.description}`);
      try {
        await this.apply(step.fault, signal);
        this.faultCounts.set(step.fault.kind, (this.faultCounts.get(step.fault.kind) ?? 0) + 1);
      } catch (err) {
        this.notes.push(`fault "${event.description}" did not complete: ${(err as Error).message.split('\n')[0]}`);
        this.log(`   fault did not complete: ${(err as Error).message.split('\n')[0]}`);
      } finally {
        cluster.healAll();
        this.history.endFault(event);
      }
    }
  }

  /** Applies one fault for its duration and undoes it (a stop cuts the wait short, not the undo). */
  private async apply(fault: Fault, signal: AbortSignal): Promise<void> {
    const cluster = this.cluster!;
    const others = (id: string) => nodeIds.filter((x) => x !== id);
    switch (fault.kind) {
      case 'kill':
        await cluster.withNode(fault.node, (n) => n.kill());
        await sleep(fault.downMs, signal);
        await cluster.withNode(fault.node, (n) => (n.running ? Promise.resolve() : cluster.startNode(fault.node)));
        return;
      case 'pause':
        await cluster.withNode(fault.node, async (n) => n.pause());
        await sleep(fault.pausedMs, signal);
        await cluster.withNode(fault.node, async (n) => n.resume());
        return;
      case 'isolate':
        for (const o of others(fault.node)) {
          cluster.cut(fault.node, o, fault.mode);
          cluster.cut(o, fault.node, fault.mode);
        }
        await sleep(fault.ms, signal);
        cluster.healAll();
        return;
      case 'one-way':
        for (const o of others(fault.node)) cluster.cut(fault.node, o);
        await sleep(fault.ms, signal);
        cluster.healAll();
        return;
      case 'partial':
        cluster.cut(fault.a, fault.b);
        cluster.cut(fault.b, fault.a);
        await sleep(fault.ms, signal);
        cluster.healAll();
        return;
      case 'skew':
      case 'storage': {
        const restart = (env: Record<string, string>) =>
          cluster.withNode(fault.node, async (n) => {
            if (fault.kill) await n.kill();
            else await n.stop();
            await cluster.startNode(fault.node, env);
          });
        await restart(fault.kind === 'skew' ? { KVSTORE_TEST_CLOCK_OFFSET_MS: String(fault.offsetMs) } : { KVSTORE_TEST_STORAGE_FAULTS: storageFaultsValue(fault) });
        await sleep(fault.ms, signal);
        await restart({});
        return;
      }
    }
  }

  /** `ms`, or what is left of the final phase if less (at least 1 s). */
  private budget(ms: number): number {
    return Math.max(1000, Math.min(ms, this.finalUntil - Date.now()));
  }

  /** Every link healed, every node resumed and running without a clock offset, every member reachable. */
  private async healEverything(violations: Violation[]): Promise<void> {
    const cluster = this.cluster!;
    cluster.healAll();
    for (const id of nodeIds) {
      await cluster.withNode(id, async (n) => {
        n.resume();
        if (n.running && Object.keys(n.env).length > 0) await n.stop();
        for (let attempt = 1; !n.running && attempt <= 3; attempt++) {
          try {
            await cluster.startNode(id);
          } catch (err) {
            // A crash right at start is recorded as an unexpected exit already.
            this.log(`   ${id} failed to start after the run (attempt ${attempt}): ${(err as Error).message.split('\n')[0]}`);
            if (attempt === 3) violations.push({ kind: 'not-converged', message: `${id} could not be started after the run: ${(err as Error).message.split('\n')[0]}`, details: n.output(20).split('\n') });
            else await sleep(1000);
          }
        }
      });
    }
    const reachable = await pollUntil(async () => {
      for (const id of nodeIds) {
        const status = await cluster.client(id).status({ deadlineMs: 2000 });
        const down = status.members.filter((m) => !m.reachable).map((m) => m.nodeId);
        if (down.length > 0) return `${id} sees ${down.join(', ')} unreachable`;
      }
      return true;
    }, this.budget(reachableDeadlineMs));
    if (reachable !== true) violations.push({ kind: 'not-converged', message: `after heal, not every member became reachable in time: ${reachable}`, details: [] });
  }

  /** Drained logs, then repair rounds until verify agrees; answers the rounds it took and whether it agreed. */
  private async converge(violations: Violation[]): Promise<{ rounds: number; agreed: boolean }> {
    const cluster = this.cluster!;
    const drained = await pollUntil(async () => {
      const waiting: string[] = [];
      for (const id of nodeIds) {
        const status = await cluster.client(id).status({ deadlineMs: 2000 });
        for (const m of status.members) if (!m.self && m.backlogEntries > 0) waiting.push(`${id}->${m.nodeId} ${m.backlogEntries}`);
      }
      return waiting.length === 0 ? true : `backlog entries ${waiting.join(', ')}`;
    }, this.budget(drainDeadlineMs));
    if (drained !== true) violations.push({ kind: 'not-converged', message: `replication backlogs did not drain in time after heal: ${drained}`, details: [] });
    this.log(`nemesis: backlogs ${drained === true ? 'drained' : 'NOT drained'} at ${(this.history.now() / 1000).toFixed(1)} s`);
    let lastDiffering = '';
    let rounds = 0;
    for (let round = 1; round <= repairRoundsMax; round++) {
      rounds = round;
      const errors: string[] = [];
      for (const id of nodeIds) {
        try {
          const report = await cluster.client(id).repair({ deadlineMs: this.budget(repairDeadlineMs) });
          for (const p of report.peers) if (p.error !== undefined) errors.push(`${id}<->${p.nodeId}: ${p.error}`);
        } catch (err) {
          errors.push(`${id}: ${(err as Error).message}`);
        }
      }
      try {
        const verify = await cluster.client('n1').verify({ deadlineMs: this.budget(repairDeadlineMs) });
        if (verify.differingRanges === 0 && errors.length === 0) {
          this.log(`nemesis: verify agrees after ${round} repair round(s)`);
          return { rounds: round, agreed: true };
        }
        const bad = verify.ranges.filter((r) => !r.agree).slice(0, 5);
        lastDiffering = `${verify.differingRanges} differing ranges (${bad.map((r) => `${r.range}: ${r.replicas.map((x) => `${x.nodeId}=${x.error ?? `${x.digest}/${x.recordCount}`}`).join(' ')}`).join('; ')})${errors.length > 0 ? `; repair errors: ${errors.join('; ')}` : ''}`;
      } catch (err) {
        lastDiffering = `verify failed: ${(err as Error).message}; repair errors: ${errors.join('; ')}`;
      }
      this.log(`nemesis: repair round ${round}: ${lastDiffering}`);
      if (Date.now() >= this.finalUntil) break;
    }
    violations.push({ kind: 'not-converged', message: `replicas still differ after ${rounds} repair round(s) on every node: ${lastDiffering}`, details: [] });
    return { rounds, agreed: false };
  }

  private writeHistory(path: string): void {
    const lines = [
      JSON.stringify({ type: 'run', seed: this.options.seed, durationMs: this.options.durationMs, clients: this.options.clients, schedule: this.schedule }),
      ...this.history.faults.map((f) => JSON.stringify({ type: 'fault', ...f })),
      ...(this.cluster?.unexpectedExits ?? []).map((e) => JSON.stringify({ type: 'exit', ...e })),
      ...this.history.ops.map((op) => JSON.stringify({ type: 'op', ...op })),
    ];
    writeFileSync(path, `${lines.join('\n')}\n`);
  }

  private summarize(
    violations: readonly Violation[],
    anomalies: readonly Anomaly[],
    keys: number,
    keysAcked: number,
    repair: { rounds: number; agreed: boolean },
    wallMs: number,
  ): string {
    const counts = new Map<string, number>();
    for (const op of this.history.ops) counts.set(`${op.kind} ${op.outcome}`, (counts.get(`${op.kind} ${op.outcome}`) ?? 0) + 1);
    const kinds = ['put', 'delete', 'get'];
    const outcomeLine = kinds
      .map((k) => `${k}: ${['ok', 'indeterminate', 'failed', 'pending'].map((o) => [o, counts.get(`${k} ${o}`) ?? 0] as const).filter(([o, n]) => n > 0 || o === 'ok').map(([o, n]) => `${n} ${o}`).join(', ')}`)
      .join('; ');
    const causes = new Map<string, number>();
    for (const op of this.history.ops) {
      if (op.outcome !== 'indeterminate' || op.kind === 'get') continue;
      const cause = op.unreachable ? 'no node reached' : (op.error ?? '?').split(':')[0]!;
      causes.set(cause, (causes.get(cause) ?? 0) + 1);
    }
    const byKind = new Map<string, number>();
    for (const v of violations) byKind.set(v.kind, (byKind.get(v.kind) ?? 0) + 1);
    const lines = [
      `nemesis seed ${this.options.seed} (replay with KVSTORE_TEST_SEED=${this.options.seed})`,
      `run: ${this.options.clients} clients for ${(this.options.durationMs / 1000).toFixed(0)} s of faults, ${(wallMs / 1000).toFixed(1)} s in all`,
      `operations: ${this.history.ops.length} (${outcomeLine})`,
      `indeterminate writes by cause: ${[...causes].sort((a, b) => b[1] - a[1]).map(([c, n]) => `${c} ${n}`).join(', ') || 'none'}`,
      `faults applied: ${[...this.faultCounts].map(([k, n]) => `${k} ${n}`).join(', ') || 'none'} (${this.history.faults.length} scheduled and started)`,
      ...this.history.faults.map((f) => `  ${(f.startMs / 1000).toFixed(1)}-${(f.endMs / 1000).toFixed(1)} s: ${f.description}`),
      ...this.notes.map((n) => `  note: ${n}`),
      `node exits nobody asked for: ${this.cluster?.unexpectedExits.length ?? 0}; error-level log lines: ${this.cluster?.errorLogs.length ?? 0} (and ${this.cluster?.injectedStorageErrorLogs ?? 0} caused by injected storage failures)`,
      `checked: ${keys} keys (${keysAcked} with an acknowledged write); Verify ${repair.agreed ? 'agreed' : 'still DISAGREED'} after ${repair.rounds} repair round(s)`,
      `anomalies (allowed: an indeterminate write took effect after a later acknowledged one): ${anomalies.length}`,
      `violations: ${violations.length}${violations.length > 0 ? ` (${[...byKind].map(([k, n]) => `${k} ${n}`).join(', ')})` : ''}`,
    ];
    return lines.join('\n');
  }
}

/** Error-level log lines, one violation per node and message, with the first lines in full. */
function errorLogViolations(logs: readonly ErrorLog[]): Violation[] {
  const groups = new Map<string, ErrorLog[]>();
  for (const log of logs) {
    const id = `${log.node}\u0000${log.msg}`;
    const group = groups.get(id);
    if (group === undefined) groups.set(id, [log]);
    else group.push(log);
  }
  return [...groups.values()].map((group) => {
    const first = group[0]!;
    return {
      kind: 'node-error' as const,
      message: `${first.node} logged ${group.length} time(s) at level ${first.level} (first at ${(first.atMs / 1000).toFixed(1)} s, pid ${first.pid}): ${first.msg}`,
      details: group.slice(0, 2).map((l) => l.line.slice(0, 3000)),
    };
  });
}

/** The violations in full (the first few of each kind), then the rest one line each. */
export function formatReport(violations: readonly Violation[], anomalies: readonly Anomaly[] = []): string {
  const lines: string[] = [];
  const shown = new Map<string, number>();
  const brief: string[] = [];
  for (const v of violations) {
    const n = (shown.get(v.kind) ?? 0) + 1;
    shown.set(v.kind, n);
    if (n <= reportFullPerKind) {
      lines.push(`VIOLATION ${v.kind}${v.key !== undefined ? ` key ${JSON.stringify(v.key)}` : ''}: ${v.message}`, ...v.details.map((d) => `    ${d}`), '');
    } else {
      brief.push(`  ${v.kind}${v.key !== undefined ? ` ${JSON.stringify(v.key)}` : ''}: ${v.message}`);
    }
  }
  if (brief.length > 0) lines.push(`further violations (${brief.length}):`, ...brief.slice(0, 100), ...(brief.length > 100 ? [`  ... ${brief.length - 100} more`] : []), '');
  if (anomalies.length > 0) {
    const keys = new Set(anomalies.map((a) => a.key));
    lines.push(`anomalies (allowed: an indeterminate write took effect after a later acknowledged one): ${anomalies.length} on ${keys.size} keys; the first, in full:`);
    const first = anomalies[0]!;
    lines.push(`  key ${JSON.stringify(first.key)}: ${first.message}`, ...first.details.map((d) => `      ${d}`));
    const others = [...new Map(anomalies.map((a) => [a.key, a])).values()].slice(1, 6);
    for (const a of others) lines.push(`  key ${JSON.stringify(a.key)}: ${a.message}`);
  }
  return lines.join('\n');
}

/** The seed: KVSTORE_TEST_SEED when set (to replay), else random. */
export function nemesisSeed(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.KVSTORE_TEST_SEED;
  if (raw !== undefined && raw !== '') {
    const seed = Number(raw);
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffff_ffff) throw new Error(`KVSTORE_TEST_SEED must be an integer in 0..4294967295, got "${raw}"`);
    return seed;
  }
  return Math.floor(Math.random() * 2 ** 31);
}
