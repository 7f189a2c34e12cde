import { join } from 'node:path';
import { open } from 'lmdb';
import { KvClient } from '../../src/client/index.js';
import { decodeMembership, type MembershipState } from '../../src/cluster/membership.js';
import { RingView } from '../../src/cluster/ring-view.js';
import { environmentFileName } from '../../src/storage/repository.js';
import { checkHistory, type CheckResult } from './nemesis/checker.js';
import { formatReport } from './nemesis/harness.js';
import { History, type Op, type Workload } from './nemesis/history.js';
import type { NodeProcess } from './node-process.js';
import { readReplica, type ReplicaContents, seededRandom } from './replica-state.js';

/** Config the small membership scenarios share: fast retries and probes, anti-entropy off (only streams and writes copy data). */
export const membershipScenarioConfig = {
  replication: { retryMinMs: 20, retryMaxMs: 300, probeIntervalMs: 250 },
  timeouts: { requestMs: 5_000, peerCallMs: 1_500 },
  antiEntropy: { intervalSeconds: 0 },
};

/** A client per call on one node's public port, no retries elsewhere; `closeAll` closes every one made. */
export function directClients(nodes: ReadonlyMap<string, NodeProcess>): { client(id: string): KvClient; closeAll(): void } {
  const made: KvClient[] = [];
  return {
    client(id) {
      const c = new KvClient({ endpoints: [nodes.get(id)!.listen], deadlineMs: 10_000, maxAttempts: 1 });
      made.push(c);
      return c;
    },
    closeAll: () => made.forEach((c) => c.close()),
  };
}

/**
 * The client load of the membership tests (test/cluster/membership-*.test.ts), recorded for the
 * nemesis history checker (src/sim/checker.ts): concurrent clients at QUORUM, each on its own
 * keys (the checker's model: one writer per key), a third each running the nemesis workloads
 * `unique` (put, read), `put-delete` (put, read, delete, read) and `sequential` (40 puts per
 * key, each read back). Bounded by a count per client and by `stop()`.
 */
export class MembershipLoad {
  readonly history = new History();
  /** Client index of operations the test runs itself (preload, final reads): one writer per key still. */
  static readonly testClient = -1;
  private running: Promise<void> | undefined;
  private stopped = false;
  private round = 0;

  constructor(
    private readonly seed: number,
    /** The SDK client of a coordinator by id. */
    private readonly clientOf: (id: string) => KvClient,
    private readonly deadlineMs = 5_000,
  ) {}

  /** Starts `clients` clients through `via` (round-robin per client), each stopping after `opsMax` operations or at `stop()`. */
  start(via: readonly string[], clients: number, opsMax: number): void {
    if (this.running !== undefined) throw new Error('the load is already running');
    this.round++;
    this.stopped = false;
    const round = this.round;
    const workloads: Workload[] = ['unique', 'put-delete', 'sequential'];
    this.running = Promise.all(
      Array.from({ length: clients }, (_, i) => this.client(round, i, workloads[i % 3]!, via, opsMax, seededRandom((this.seed ^ Math.imul(round * 1000 + i + 1, 0x9e3779b1)) >>> 0))),
    ).then(() => undefined);
  }

  /** Stops the clients (each finishes its operation in flight) and waits for them. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.running;
    this.running = undefined;
  }

  /** Operations of the last round (since its start) that did not succeed. */
  opsSince(firstId: number): Op[] {
    return this.history.ops.slice(firstId);
  }

  private async client(round: number, index: number, workload: Workload, via: readonly string[], opsMax: number, random: () => number): Promise<void> {
    let rr = index;
    let ops = 0;
    const name = `r${round}c${String(index).padStart(2, '0')}`;
    const more = () => !this.stopped && ops < opsMax;
    const coordinator = () => via[rr++ % via.length]!;
    const call = async (kind: Op['kind'], key: string, value?: string): Promise<boolean> => {
      ops++;
      const id = coordinator();
      const op = this.history.invoke({ client: round * 1000 + index, workload, kind, key, coordinator: id, ...(value !== undefined ? { value } : {}) });
      try {
        const c = this.clientOf(id);
        if (kind === 'put') {
          const r = await c.put(key, value!, { consistency: 'quorum', deadlineMs: this.deadlineMs });
          this.history.complete(op, r.found ? (r.oldValue?.toString('utf8') ?? '') : null);
        } else if (kind === 'delete') {
          const found = await c.delete(key, { consistency: 'quorum', deadlineMs: this.deadlineMs });
          this.history.complete(op, found ? { live: true } : null);
        } else {
          this.history.complete(op, (await c.getString(key, { consistency: 'quorum', deadlineMs: this.deadlineMs })) ?? null);
        }
        return true;
      } catch (err) {
        this.history.fail(op, err);
        // A coordinator that is down fails at once: do not spin.
        if (op.unreachable) await new Promise((r) => setTimeout(r, 100));
        return false;
      }
    };
    await new Promise((r) => setTimeout(r, random() * 100));
    for (let n = 1, seqKey = 0, seqWrite = 0; more(); n++) {
      if (workload === 'unique') {
        const key = `u:${name}:${n}`;
        if ((await call('put', key, `${key}:${'x'.repeat(40)}`)) && more()) await call('get', key);
      } else if (workload === 'put-delete') {
        const key = `d:${name}:${n}`;
        if ((await call('put', key, `${key}:${'y'.repeat(40)}`)) && more()) await call('get', key);
        if (!more()) break;
        if ((await call('delete', key)) && more()) await call('get', key);
      } else {
        if (++seqWrite > 40) {
          seqKey++;
          seqWrite = 1;
        }
        const key = `s:${name}:${seqKey}`;
        if ((await call('put', key, `${key}:${seqWrite}`)) && more()) await call('get', key);
      }
    }
  }

  /** A write (or read) the test runs itself, recorded like the clients' (keys not used by any client). */
  async own(kind: Op['kind'], client: KvClient, coordinator: string, key: string, value?: string): Promise<void> {
    const op = this.history.invoke({ client: MembershipLoad.testClient, workload: 'unique', kind, key, coordinator, ...(value !== undefined ? { value } : {}) });
    try {
      if (kind === 'put') {
        const r = await client.put(key, value!, { consistency: 'quorum', deadlineMs: this.deadlineMs });
        this.history.complete(op, r.found ? (r.oldValue?.toString('utf8') ?? '') : null);
      } else if (kind === 'delete') {
        this.history.complete(op, (await client.delete(key, { consistency: 'quorum', deadlineMs: this.deadlineMs })) ? { live: true } : null);
      } else {
        this.history.complete(op, (await client.getString(key, { consistency: 'quorum', deadlineMs: this.deadlineMs })) ?? null);
      }
    } catch (err) {
      this.history.fail(op, err);
      throw err;
    }
  }

  /** Every key of the history read once more at QUORUM through `coordinator` (recorded, so the checker judges them). */
  async readAll(client: KvClient, coordinator: string, parallel = 32): Promise<void> {
    const keys = [...this.history.byKey().keys()];
    await inParallel(keys.length, (i) => this.own('get', client, coordinator, keys[i]!).catch(() => undefined), parallel);
  }
}

/** Runs `fn(i)` for every i < count, `parallel` at a time. */
export async function inParallel(count: number, fn: (i: number) => Promise<void>, parallel = 32): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < count) await fn(next++);
    }),
  );
}

/** The membership a node stored (read-only, while it runs). */
export async function readMembership(dataDir: string): Promise<MembershipState> {
  const env = open({ path: join(dataDir, environmentFileName), readOnly: true, maxDbs: 8 });
  try {
    const bytes = env.openDB<Buffer, string>({ name: 'meta', encoding: 'binary' }).get('membership');
    if (bytes === undefined) throw new Error(`${dataDir} holds no membership`);
    return decodeMembership(bytes);
  } finally {
    await env.close();
  }
}

export interface FinalCheck {
  readonly checked: CheckResult;
  readonly replicas: ReadonlyMap<string, ReplicaContents>;
  /** Keys held by a member that does not own them, or by fewer or more than replicationFactor owners. */
  readonly misplaced: string[];
  readonly report: string;
  readonly summary: string;
}

/**
 * Reads every member's full contents (tombstones included) and the membership from `dataDirs`
 * (the current members, not removed ones), and checks the history against the final owners'
 * records (checkHistory with replicasOf from the final ring) and placement: every key held is
 * on exactly its replicationFactor owners and nowhere else.
 */
export async function checkFinal(history: History, dataDirs: ReadonlyMap<string, string>, settings: { replicationFactor: number; vnodesPerMember: number }): Promise<FinalCheck> {
  const replicas = new Map<string, ReplicaContents>();
  for (const [id, dir] of dataDirs) replicas.set(id, await readReplica(dir));
  const state = await readMembership([...dataDirs.values()][0]!);
  if (state.change !== undefined) throw new Error(`a change is still in progress at epoch ${state.epoch}`);
  const view = RingView.from(state, settings);
  const ownersCache = new Map<string, readonly string[]>();
  const replicasOf = (key: string) => {
    let owners = ownersCache.get(key);
    if (owners === undefined) ownersCache.set(key, (owners = view.readReplicas(Buffer.from(key, 'utf8'))));
    return owners;
  };
  const checked = checkHistory(history.byKey(), replicas, { replicasOf });
  const misplaced: string[] = [];
  const keys = new Set<string>();
  for (const contents of replicas.values()) for (const k of contents.keys()) keys.add(k);
  for (const key of keys) {
    const owners = replicasOf(key);
    const holders = [...replicas].filter(([, c]) => c.has(key)).map(([id]) => id);
    if (holders.length !== settings.replicationFactor || holders.some((h) => !owners.includes(h))) {
      // Whether each copy is a value or a tombstone: a tombstone left on some owners is a purge
      // cut short (tombstone GC finishes it), a value is a copy that should not be there.
      const copies = holders.map((h) => `${h} (${replicas.get(h)!.get(key)!.tombstone ? 'tombstone' : 'value'})`);
      misplaced.push(`${key}: on ${copies.join(', ')}; owners ${owners.join(',')}`);
    }
  }
  const counts = new Map<string, number>();
  for (const op of history.ops) counts.set(`${op.kind} ${op.outcome}`, (counts.get(`${op.kind} ${op.outcome}`) ?? 0) + 1);
  const summary = `history: ${history.ops.length} operations (${[...counts].sort().map(([k, n]) => `${k} ${n}`).join(', ')}); ${checked.keysChecked} keys checked, ${checked.violations.length} violations, ${checked.anomalies.length} anomalies; ${keys.size} keys stored, ${misplaced.length} misplaced`;
  return { checked, replicas, misplaced, report: formatReport(checked.violations.slice(0, 10), checked.anomalies.slice(0, 3)), summary };
}
