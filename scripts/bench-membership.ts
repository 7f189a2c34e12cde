/**
 * The cost of adding a node: `npm run bench:membership -- [--keys <n>] [--probe-clients <n>] [--cpu-prof-dir <dir>]`.
 * Starts 3 real nodes (replicationFactor 3) on 127.0.0.1, loads --keys keys of 100-byte values
 * through the SDK at QUORUM, then measures a probe load (half gets, half puts, at QUORUM) for
 * 15 s before and for the whole of `member add n4`, and prints the time the add took, what n4
 * received, the streaming rate and the probe's latency percentiles before and during the
 * change. BENCHMARKS.md ("Adding a node") records its figures. Anti-entropy is off so that only
 * the streams (and the dual writes) fill n4; everything else is the default config
 * (streaming.maxBytesPerSecond 32 MiB/s, batchMaxBytes 1 MiB, rangesInFlight 4).
 */
import { parseArgs } from 'node:util';
import { KvClient } from '../src/client/index.js';
import { Rng } from '../src/common/rng.js';
import { makeTempDir, NodeProcess, removeTempDir } from '../test/helpers/node-process.js';
import { unusedPort } from '../test/helpers/tcp-proxy.js';

/** Concurrent calls while loading (the SDK coalesces them onto OperationStreams). */
const loadConcurrency = 256;
/** How long the probe runs before the change. */
const beforeMs = 15_000;
/** Most the change may take before the run gives up. */
const changeMsMax = 30 * 60_000;
const valueBytes = 100;

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { keys: { type: 'string' }, 'probe-clients': { type: 'string' }, seed: { type: 'string' }, 'cpu-prof-dir': { type: 'string' } } });
  const keys = Number(values.keys ?? 1_000_000);
  const probeClients = Number(values['probe-clients'] ?? 16);
  const seed = Number(values.seed ?? 20261201);
  if (!Number.isInteger(keys) || keys < 1 || !Number.isInteger(probeClients) || probeClients < 1) throw new Error('--keys and --probe-clients take positive integers');
  console.log(`bench:membership keys=${keys} probe-clients=${probeClients} seed=${seed}`);
  const dir = makeTempDir('kvstore-bench-membership-');
  const nodes: NodeProcess[] = [];
  const clients: KvClient[] = [];
  try {
    const peer = new Map<string, string>();
    for (const id of ['n1', 'n2', 'n3', 'n4']) peer.set(id, `127.0.0.1:${await unusedPort()}`);
    const members = ['n1', 'n2', 'n3'].map((id) => ({ id, peer: peer.get(id)! }));
    const common = { antiEntropy: { intervalSeconds: 0 } };
    for (const m of members) nodes.push(NodeProcess.create(dir, m.id, { ...common, peerListen: m.peer, cluster: { members } }));
    const n4 = NodeProcess.create(dir, 'n4', { ...common, peerListen: peer.get('n4'), cluster: { join: [members[0]!.peer], replicationFactor: 3 } });
    // --cpu-prof-dir: n1 (a source) and n4 (the receiver) write V8 CPU profiles there when they stop.
    const profileDir = values['cpu-prof-dir'];
    if (profileDir !== undefined) for (const n of [nodes[0]!, n4]) n.nodeArgs = ['--cpu-prof', `--cpu-prof-dir=${profileDir}`];
    await Promise.all(nodes.map((n) => n.start()));
    const endpoints = nodes.map((n) => n.listen);
    const client = new KvClient({ endpoints });
    clients.push(client);
    // Every node reaches every other before the load starts (they start in parallel).
    for (const n of nodes) {
      const c = new KvClient({ endpoints: [n.listen] });
      clients.push(c);
      for (let i = 0; !(await c.status()).members.every((m) => m.reachable); i++) {
        if (i > 200) throw new Error(`${n.id} does not reach its peers`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }

    const value = Buffer.alloc(valueBytes, 'v');
    const loadStarted = Date.now();
    let next = 0;
    let lastReport = Date.now();
    await Promise.all(
      Array.from({ length: loadConcurrency }, async () => {
        for (let i = next++; i < keys; i = next++) {
          await client.put(`k${i.toString().padStart(8, '0')}`, value, { consistency: 'quorum' });
          if (Date.now() - lastReport > 10_000) {
            lastReport = Date.now();
            console.log(`  loaded ${next} of ${keys} keys`);
          }
        }
      }),
    );
    const loadSeconds = (Date.now() - loadStarted) / 1000;
    console.log(`loaded ${keys} keys of ${valueBytes} bytes in ${loadSeconds.toFixed(1)} s (${Math.round(keys / loadSeconds)}/s)`);

    // The probe: its own clients, a latency per operation, tagged before or during the change.
    const rng = new Rng(seed);
    let phase: 'before' | 'during' | 'done' = 'before';
    const latencies = { before: [] as number[], during: [] as number[] };
    let failures = 0;
    const failureReasons = new Map<string, number>();
    const probe = Promise.all(
      Array.from({ length: probeClients }, async (_, c) => {
        const pc = new KvClient({ endpoints: [endpoints[c % endpoints.length]!] });
        clients.push(pc);
        for (let i = 0; phase !== 'done'; i++) {
          const key = `k${Math.floor(rng.next() * keys).toString().padStart(8, '0')}`;
          const started = performance.now();
          try {
            if (i % 2 === 0) await pc.get(key, { consistency: 'quorum' });
            else await pc.put(key, value, { consistency: 'quorum' });
          } catch (err) {
            failures++;
            // The reason without addresses and counts, so alike failures group.
            const reason = (err as Error).message.replace(/127\.0\.0\.1:\d+/g, '<node>').replace(/\d+/g, 'N').slice(0, 200);
            failureReasons.set(reason, (failureReasons.get(reason) ?? 0) + 1);
            continue;
          }
          const tag = phase;
          if (tag !== 'done') latencies[tag].push(performance.now() - started);
        }
      }),
    );
    await new Promise((resolve) => setTimeout(resolve, beforeMs));

    await n4.start();
    nodes.push(n4);
    const admin = new KvClient({ endpoints: [endpoints[0]!] });
    clients.push(admin);
    phase = 'during';
    const changeStarted = Date.now();
    await admin.changeMembership({ kind: 'add', nodeId: 'n4', peer: peer.get('n4')! });
    let streamingStartedMs: number | undefined;
    let streamingDoneMs: number | undefined;
    let streamedBytes = 0;
    let streamedKeys = 0;
    for (;;) {
      const status = await admin.status();
      const p = status.membershipChangeProgress;
      if (p !== undefined && p.keys > 0) {
        streamingStartedMs ??= Date.now();
        streamedBytes = p.bytes;
        streamedKeys = p.keys;
        if (p.transfersTotal > 0 && p.transfersDone === p.transfersTotal) streamingDoneMs ??= Date.now();
      }
      if (status.membershipChange === undefined) break;
      if (Date.now() - changeStarted > changeMsMax) throw new Error(`the add did not complete in ${changeMsMax / 60_000} min`);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    const changeSeconds = (Date.now() - changeStarted) / 1000;
    phase = 'done';
    await probe;
    const n4Status = await new KvClient({ endpoints: [n4.listen] }).status();
    const streamSeconds = ((streamingDoneMs ?? Date.now()) - (streamingStartedMs ?? changeStarted)) / 1000;
    const before = latencies.before.sort((a, b) => a - b);
    const during = latencies.during.sort((a, b) => a - b);
    const ms = (v: number) => v.toFixed(2);
    console.log(`member add n4: ${changeSeconds.toFixed(1)} s from the command to the end of the change`);
    console.log(`n4 received ${streamedKeys} keys, ${(streamedBytes / 2 ** 20).toFixed(1)} MiB by streaming in about ${streamSeconds.toFixed(1)} s (${(streamedBytes / 2 ** 20 / Math.max(streamSeconds, 0.001)).toFixed(1)} MiB/s, ${Math.round(streamedKeys / Math.max(streamSeconds, 0.001))} keys/s); n4 holds ${n4Status.recordCount} records at the end`);
    console.log(`probe (${probeClients} clients, QUORUM, half gets, half puts): before p50 ${ms(percentile(before, 50))} ms p99 ${ms(percentile(before, 99))} ms p99.9 ${ms(percentile(before, 99.9))} ms max ${ms(before[before.length - 1] ?? Number.NaN)} ms (${before.length} ops in ${beforeMs / 1000} s); during p50 ${ms(percentile(during, 50))} ms p99 ${ms(percentile(during, 99))} ms p99.9 ${ms(percentile(during, 99.9))} ms max ${ms(during[during.length - 1] ?? Number.NaN)} ms (${during.length} ops in ${changeSeconds.toFixed(1)} s); ${failures} failed`);
    for (const [reason, n] of failureReasons) console.log(`  ${n} x ${reason}`);
  } finally {
    for (const c of clients) c.close();
    await Promise.all(nodes.map((n) => n.stop()));
    removeTempDir(dir);
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
