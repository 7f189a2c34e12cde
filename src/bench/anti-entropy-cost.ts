#!/usr/bin/env node
/**
 * Measures what anti-entropy costs (BENCHMARKS.md): a 2-node cluster (replicationFactor 2) holding
 * N keys; time and bytes of one exchange between two in-sync replicas, then of the exchange that
 * repairs a replica which lost 10% of its keys (deleted offline from its LMDB records and hash
 * index, as a damaged disk would). Usage: node dist/src/bench/anti-entropy-cost.js [--keys 100000]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { open } from 'lmdb';
import { KvClient } from '../client/index.js';
import { LocalCluster } from '../launcher/local-cluster.js';
import { waitUntilHealthy } from './bench-cluster.js';
import { murmur3x86_32 } from '../cluster/hash.js';
import { environmentFileName } from '../storage/repository.js';

/** Concurrent puts while loading. */
const loadConcurrency = 256;
/** Exchanges measured on the in-sync pair (the median is reported). */
const inSyncRounds = 3;
const valueBytes = 100;

interface Measured {
  readonly durationMs: number;
  readonly bytes: number;
  readonly pulled: number;
  readonly pushed: number;
  readonly rangesDiffering: number;
  readonly rangesCompared: number;
}

async function exchange(endpoint: string): Promise<Measured> {
  const client = new KvClient({ endpoints: [endpoint] });
  try {
    const started = performance.now();
    const { peers } = await client.repair();
    const wallMs = performance.now() - started;
    const p = peers[0]!;
    if (p.error !== undefined) throw new Error(`exchange failed: ${p.error}`);
    return { durationMs: wallMs, bytes: p.bytesTransferred, pulled: p.recordsPulled, pushed: p.recordsPushed, rangesDiffering: p.rangesDiffering, rangesCompared: p.rangesCompared };
  } finally {
    client.close();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { keys: { type: 'string', default: '100000' }, 'base-port': { type: 'string', default: '24000' } } });
  const keyCount = Number(values.keys);
  const basePort = Number(values['base-port']);
  const dir = mkdtempSync(join(tmpdir(), 'kvstore-ae-bench-'));
  const extra = { logLevel: 'info', antiEntropy: { intervalSeconds: 0, maxRecordsPerSecond: 1_000_000 } };
  let cluster = await LocalCluster.generate(2, dir, basePort, extra);
  try {
    if (!(await waitUntilHealthy(cluster.endpoints, false))) throw new Error('the two nodes did not see each other');
    const client = new KvClient({ endpoints: cluster.endpoints, channelsPerEndpoint: 4 });
    const value = Buffer.alloc(valueBytes, 0x61);
    let next = 0;
    const loadStarted = performance.now();
    await Promise.all(
      Array.from({ length: loadConcurrency }, async () => {
        for (let i = next++; i < keyCount; i = next++) {
          await client.put(`ae:${String(i).padStart(8, '0')}`, value, { consistency: 'all' });
          if (i % 10_000 === 0) process.stderr.write(`\rloaded ${i} / ${keyCount}`);
        }
      }),
    );
    client.close();
    process.stderr.write(`\rloaded ${keyCount} keys in ${((performance.now() - loadStarted) / 1000).toFixed(1)} s\n`);

    const inSync: Measured[] = [];
    for (let r = 0; r < inSyncRounds; r++) inSync.push(await exchange(cluster.endpoints[0]!));
    inSync.sort((a, b) => a.durationMs - b.durationMs);
    const median = inSync[Math.floor(inSync.length / 2)]!;

    // Damage n2 offline: lose every 10th key (record and hash-index entry).
    await cluster.stop();
    const env = open({ path: join(dir, 'n2', environmentFileName), maxDbs: 8 });
    const records = env.openDB<Buffer, Buffer>({ name: 'records', encoding: 'binary', keyEncoding: 'binary' });
    const hashIndex = env.openDB<Buffer, Buffer>({ name: 'hashindex', encoding: 'binary', keyEncoding: 'binary' });
    let lost = 0;
    await env.transaction(() => {
      for (let i = 0; i < keyCount; i += 10) {
        const key = Buffer.from(`ae:${String(i).padStart(8, '0')}`);
        const indexKey = Buffer.alloc(4 + key.length);
        indexKey.writeUInt32BE(murmur3x86_32(key, 0));
        key.copy(indexKey, 4);
        if (records.removeSync(key)) lost++;
        hashIndex.removeSync(indexKey);
      }
    });
    await env.close();
    cluster = await LocalCluster.launch([join(dir, 'n1.yaml'), join(dir, 'n2.yaml')]);
    if (!(await waitUntilHealthy(cluster.endpoints, false))) throw new Error('the two nodes did not see each other after restart');
    const repairRun = await exchange(cluster.endpoints[0]!);
    const after = await exchange(cluster.endpoints[0]!);

    const row = (name: string, m: Measured) =>
      `| ${name} | ${m.durationMs.toFixed(0)} | ${(m.bytes / 1024).toFixed(1)} | ${m.rangesCompared} | ${m.rangesDiffering} | ${m.pulled} | ${m.pushed} |`;
    process.stdout.write(
      [
        `anti-entropy cost, ${keyCount} keys x ${valueBytes} B, 2 nodes, replicationFactor 2 (lost on n2: ${lost} keys)`,
        '| exchange (n1 with n2) | wall ms | KiB moved | ranges compared | ranges differing | pulled | pushed |',
        '|---|---|---|---|---|---|---|',
        row(`in sync (median of ${inSyncRounds})`, median),
        row('n2 lost 10% of its keys', repairRun),
        row('right after the repair', after),
        '',
      ].join('\n'),
    );
  } finally {
    await cluster.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: Error) => {
  process.stderr.write(`anti-entropy bench: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
