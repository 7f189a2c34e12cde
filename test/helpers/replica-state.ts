import { decodeRecord } from '../../src/storage/record-codec.js';
import { Repository } from '../../src/storage/repository.js';
import { compareVersions, formatVersion, type Version } from '../../src/cluster/version.js';

import type { ReplicaContents, ReplicaRecord } from '../../src/sim/replica-contents.js';

export type { ReplicaContents, ReplicaRecord } from '../../src/sim/replica-contents.js';

/**
 * Every record a node stores (tombstones and versions included), read straight from its LMDB
 * environment with a read-only handle: LMDB allows readers in other processes while the node
 * runs, so this is the direct check of a replica's full contents.
 */
export async function readReplica(dataDir: string): Promise<ReplicaContents> {
  const env = Repository.openReadOnly(dataDir);
  try {
    const out: ReplicaContents = new Map();
    for (const { key, value } of env.records.getRange({})) {
      const r = decodeRecord(value);
      out.set(key.toString('utf8'), { tombstone: r.tombstone, value: Buffer.from(r.value).toString('utf8'), version: r.version });
    }
    return out;
  } finally {
    await env.close();
  }
}

/** LWW merge of several replicas' contents: what every replica must converge to. */
export function mergeReplicas(replicas: readonly ReplicaContents[]): ReplicaContents {
  const out: ReplicaContents = new Map();
  for (const replica of replicas) {
    for (const [key, rec] of replica) {
      const cur = out.get(key);
      if (cur === undefined || compareVersions(rec.version, cur.version) > 0) out.set(key, rec);
    }
  }
  return out;
}

/** Differences between two replicas' contents, as readable lines (empty when identical). */
export function diffReplicas(a: ReplicaContents, b: ReplicaContents, limit = 10): string[] {
  const lines: string[] = [];
  const show = (r: ReplicaRecord | undefined) => (r === undefined ? 'absent' : `${r.tombstone ? 'tombstone' : JSON.stringify(r.value)} @${formatVersion(r.version)}`);
  for (const key of new Set([...a.keys(), ...b.keys()])) {
    const x = a.get(key);
    const y = b.get(key);
    if (x !== undefined && y !== undefined && x.tombstone === y.tombstone && x.value === y.value && compareVersions(x.version, y.version) === 0) continue;
    lines.push(`${key}: ${show(x)} vs ${show(y)}`);
    if (lines.length >= limit) break;
  }
  return lines;
}

/** Live keys (non-tombstones) of a replica. */
export function liveKeys(contents: ReplicaContents): string[] {
  return [...contents].filter(([, r]) => !r.tombstone).map(([k]) => k).sort();
}

/** Small seeded PRNG (mulberry32) so fault schedules can be replayed from a printed seed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The seed for a fault test: KVSTORE_TEST_SEED to replay, else random; printed either way. */
export function testSeed(name: string): number {
  const seed = process.env.KVSTORE_TEST_SEED !== undefined ? Number(process.env.KVSTORE_TEST_SEED) : Math.floor(Math.random() * 2 ** 31);
  console.log(`[${name}] seed ${seed} (replay with KVSTORE_TEST_SEED=${seed})`);
  return seed;
}
