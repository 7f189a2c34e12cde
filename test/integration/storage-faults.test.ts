import { afterEach, describe, expect, it } from 'vitest';
import { SingleNode, testSeed } from '../helpers/single-node.js';

/**
 * A real node process whose storage fails on purpose (the KVSTORE_TEST_STORAGE_FAULTS hook,
 * docs/testing.md): write jobs and whole group commits fail at random, on both of LMDB's commit
 * paths (a few records on the main thread, more on lmdb-js's write thread; the concurrent puts
 * below share transactions of up to 32 records, the lone ones commit alone). The node must keep
 * serving; a put it acknowledged must be stored, and one it refused must change nothing, so the
 * key count it reports always equals what LMDB holds, before a restart without the hook and after.
 */

const concurrentRounds = 30;
const concurrentPuts = 32;
const lonePuts = 60;

let single: SingleNode | undefined;
afterEach(async () => {
  await single?.close();
  single = undefined;
});

async function listedKeys(single: SingleNode): Promise<Set<string>> {
  const keys = new Set<string>();
  for await (const key of single.client().listKeys()) keys.add(key.toString());
  return keys;
}

describe('injected storage failures (KVSTORE_TEST_STORAGE_FAULTS)', () => {
  it('a node keeps serving; what it acknowledged is stored, what it refused is not, and its key count equals what LMDB holds, before and after a restart', async () => {
    const seed = testSeed();
    console.log(`[storage-faults] seed ${seed} (replay with KVSTORE_TEST_SEED=${seed})`);
    single = await SingleNode.start('faulty', {}, undefined, { KVSTORE_TEST_STORAGE_FAULTS: `job=0.1,commit=0.2,seed=${seed}` });
    expect(single.node.output()).toMatch(/test hook: failing storage writes on purpose/);
    const kv = single.client({ deadlineMs: 10_000, maxAttempts: 1 });
    const acked = new Map<string, string>();
    const refused = new Set<string>();
    const put = async (key: string, value: string) => {
      try {
        await kv.put(key, value);
        acked.set(key, value);
      } catch {
        refused.add(key);
      }
    };
    for (let round = 0; round < concurrentRounds; round++) {
      await Promise.all(Array.from({ length: concurrentPuts }, (_, i) => put(`c${round}-${i}`, `v${round}-${i}`)));
    }
    for (let i = 0; i < lonePuts; i++) await put(`lone-${i}`, `v-${i}`);
    // Both outcomes happened, or the test shows nothing.
    expect(refused.size).toBeGreaterThan(0);
    expect(acked.size).toBeGreaterThan(0);

    const check = async (when: string) => {
      const listed = await listedKeys(single!);
      for (const key of refused) expect(listed.has(key), `${when}: refused put of ${key} was stored`).toBe(false);
      for (const [key, value] of acked) expect(await single!.client().getString(key), `${when}: acknowledged ${key}`).toBe(value);
      expect(listed.size, when).toBe(acked.size);
      expect(Number((await single!.client().status()).keyCount), `${when}: the node's key count against the keys LMDB lists`).toBe(listed.size);
    };
    await check('under faults');

    single.closeClients();
    await single.node.stop();
    single.node.env = {};
    await single.node.start();
    await check('after a restart without the hook');
  });

  it('refuses a malformed hook value at start, naming the variable', async () => {
    await expect(SingleNode.start('bad-hook', {}, undefined, { KVSTORE_TEST_STORAGE_FAULTS: 'commit=2' })).rejects.toThrow(/KVSTORE_TEST_STORAGE_FAULTS must look like/);
  });
});
