import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KvClient, ListKeysOptions } from '../../src/client/index.js';
import { byteOrder, collectKeys, hexKeys, inChunks, SingleNode } from '../helpers/single-node.js';

/** Keys written before the listing tests. */
const keyCount = 10_000;
/** Concurrent puts per chunk while loading. */
const writeChunk = 500;

/**
 * Key families: ASCII prefixes of different sizes, plus binary keys whose byte order differs from
 * JavaScript string order (0x00 and 0xff bytes, multi-byte UTF-8).
 */
function makeKeys(): Buffer[] {
  const keys: Buffer[] = [];
  const families: [string, number][] = [
    ['user:', 4000],
    ['order:', 3000],
    ['a/', 1500],
    ['a/b/', 500],
    ['é/', 400],
    ['Z', 300],
  ];
  for (const [prefix, count] of families) {
    for (let i = 0; i < count; i++) keys.push(Buffer.from(`${prefix}${String(i).padStart(5, '0')}`, 'utf8'));
  }
  // Binary keys: all-0xff prefix (no upper bound for the range), 0x00 bytes, single bytes.
  for (let i = 0; keys.length < keyCount - 3; i++) keys.push(Buffer.from([0xff, 0xff, i >> 8, i & 0xff, 0x00]));
  keys.push(Buffer.from([0x00]), Buffer.from([0x00, 0x00]), Buffer.from([0xff]));
  expect(keys).toHaveLength(keyCount);
  return keys;
}

describe('ListKeys over 10,000 keys on one node', () => {
  let single: SingleNode;
  let client: KvClient;
  /** Live keys, sorted by bytes: the model every listing is checked against. */
  let live: Buffer[];
  let deleted: Buffer[];

  /** The model's answer for a listing. */
  function expected(options: { prefix?: Buffer | string; startAfter?: Buffer | string; limit?: number } = {}): Buffer[] {
    const prefix = Buffer.from(options.prefix ?? '');
    const startAfter = Buffer.from(options.startAfter ?? '');
    const matching = live.filter(
      (k) => k.subarray(0, prefix.length).equals(prefix) && (startAfter.length === 0 || Buffer.compare(k, startAfter) > 0),
    );
    return options.limit ? matching.slice(0, options.limit) : matching;
  }

  async function list(options: ListKeysOptions = {}): Promise<Buffer[]> {
    return collectKeys(client.listKeys(options));
  }

  beforeAll(async () => {
    single = await SingleNode.start('list1');
    client = single.client({ deadlineMs: 20_000 });
    const keys = makeKeys();
    await inChunks(keys, writeChunk, (key, i) => client.put(key, `v${i}`));
    // Delete every 7th key, and the whole 'Z' family: deleted keys must never be listed.
    deleted = keys.filter((k, i) => i % 7 === 3 || k.toString('latin1').startsWith('Z'));
    await inChunks(deleted, writeChunk, async (key) => expect(await client.delete(key)).toBe(true));
    const deletedHex = new Set(hexKeys(deleted));
    live = keys.filter((k) => !deletedHex.has(k.toString('hex'))).sort(byteOrder);
  }, 60_000);

  afterAll(async () => {
    await single?.close();
  });

  it('lists every live key exactly once, in ascending byte order', async () => {
    const all = await list();
    expect(all).toHaveLength(live.length);
    expect(hexKeys(all)).toEqual(hexKeys(live));
    for (let i = 1; i < all.length; i++) expect(Buffer.compare(all[i - 1]!, all[i]!)).toBeLessThan(0);
    // Byte order, not JavaScript string order: 'é/' (0xc3...) sorts after 'user:', 0xff keys last.
    expect(all[0]!.toString('hex')).toBe('00');
    expect(all[all.length - 1]![0]).toBe(0xff);
    expect((await client.status()).keyCount).toBe(live.length);
  });

  it('limit 0 means all, the same as no limit', async () => {
    expect(hexKeys(await list({ limit: 0 }))).toEqual(hexKeys(live));
  });

  it('never lists a deleted key, even a whole deleted prefix', async () => {
    const all = new Set(hexKeys(await list()));
    for (const key of hexKeys(deleted)) expect(all.has(key), key).toBe(false);
    expect(await list({ prefix: 'Z' })).toEqual([]);
  });

  it.each(['user:', 'order:', 'a/', 'a/b/', 'é/', 'user:0001', 'order:02999', 'nothing-here'])('filters by prefix %j', async (prefix) => {
    expect(hexKeys(await list({ prefix }))).toEqual(hexKeys(expected({ prefix })));
  });

  it('filters by binary prefixes, including an all-0xff prefix and a 0x00 prefix', async () => {
    for (const prefix of [Buffer.from([0xff]), Buffer.from([0xff, 0xff]), Buffer.from([0xff, 0xff, 0x00, 0x06]), Buffer.from([0x00])]) {
      const want = expected({ prefix });
      expect(want.length, prefix.toString('hex')).toBeGreaterThan(0);
      expect(hexKeys(await list({ prefix })), prefix.toString('hex')).toEqual(hexKeys(want));
    }
  });

  it('starts strictly after startAfter, whether or not that key exists', async () => {
    const existing = live[4321]!;
    const cases: (string | Buffer)[] = [existing, 'order:01500x', 'a/', 'a/b', deleted[10]!, Buffer.from([0x00]), Buffer.from([0xff, 0xff]), 'zzz'];
    for (const startAfter of cases) {
      const got = await list({ startAfter });
      expect(hexKeys(got), Buffer.from(startAfter).toString('hex')).toEqual(hexKeys(expected({ startAfter })));
    }
    // After the last key: nothing.
    expect(await list({ startAfter: live[live.length - 1]! })).toEqual([]);
  });

  // 1000 is the node's batch size: limits around it cross a batch boundary; 20,000 is past the end.
  it.each([1, 2, 999, 1000, 1001, 2500, 20_000])('stops after limit %i keys', async (limit) => {
    const got = await list({ limit });
    expect(got).toHaveLength(Math.min(limit, live.length));
    expect(hexKeys(got)).toEqual(hexKeys(expected({ limit })));
  });

  it('combines prefix, startAfter and limit', async () => {
    const cases: { prefix: string | Buffer; startAfter: string | Buffer; limit: number }[] = [
      { prefix: 'user:', startAfter: 'user:01000', limit: 10 },
      { prefix: 'user:', startAfter: 'user:01000', limit: 1500 },
      { prefix: 'order:', startAfter: 'a', limit: 5 }, // startAfter before the prefix range
      { prefix: 'a/', startAfter: 'zzz', limit: 5 }, // startAfter past the prefix range
      { prefix: 'a/', startAfter: 'a/01490', limit: 50 }, // crosses from a/01xxx into a/b/...
      { prefix: 'a/b/', startAfter: 'a/01490', limit: 50 }, // startAfter before the prefix, shares its first bytes
      { prefix: Buffer.from([0xff, 0xff]), startAfter: Buffer.from([0xff, 0xff, 0x00, 0x80]), limit: 77 },
      { prefix: 'é/', startAfter: 'é/00399', limit: 3 },
    ];
    for (const options of cases) {
      const got = await list(options);
      expect(hexKeys(got), JSON.stringify(options)).toEqual(hexKeys(expected(options)));
    }
  });

  it('paginating with startAfter = the last key of the previous page gives the full listing', async () => {
    for (const [pageSize, prefix] of [
      [777, undefined],
      [1000, undefined],
      [333, 'user:'],
    ] as const) {
      const pages: Buffer[] = [];
      let startAfter: Buffer | undefined;
      let calls = 0;
      for (;;) {
        const page = await list({ limit: pageSize, ...(prefix ? { prefix } : {}), ...(startAfter ? { startAfter } : {}) });
        calls++;
        expect(page.length).toBeLessThanOrEqual(pageSize);
        pages.push(...page);
        if (page.length < pageSize) break;
        startAfter = page[page.length - 1]!;
        expect(calls).toBeLessThan(keyCount);
      }
      expect(hexKeys(pages)).toEqual(hexKeys(expected(prefix ? { prefix } : {})));
    }
  });

  it('streams non-empty ascending batches that continue each other', async () => {
    const batches: Buffer[][] = [];
    for await (const batch of client.listKeyBatches()) batches.push(batch);
    expect(batches.length).toBeGreaterThan(1);
    for (const batch of batches) expect(batch.length).toBeGreaterThan(0);
    expect(hexKeys(batches.flat())).toEqual(hexKeys(live));
  });

  it('lists a deleted key again once it is written again, and drops a key deleted after the fact', async () => {
    const revived = deleted[0]!;
    const dropped = live[0]!;
    await client.put(revived, 'again');
    await client.delete(dropped);
    try {
      const all = hexKeys(await list());
      expect(all).toContain(revived.toString('hex'));
      expect(all).not.toContain(dropped.toString('hex'));
      expect(all).toHaveLength(live.length);
    } finally {
      await client.delete(revived);
      await client.put(dropped, 'back');
    }
    expect(hexKeys(await list())).toEqual(hexKeys(live));
  });
});
