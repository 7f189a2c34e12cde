import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type KvClient, KvError } from '../../src/client/index.js';
import { compareEncodedVersions, decodeRecordHeader } from '../../src/storage/record-codec.js';
import { Repository } from '../../src/storage/repository.js';
import { waitFor } from '../helpers/wait.js';
import { collectKeys, inChunks, randomInt, seededRandom, SingleNode, testSeed } from '../helpers/single-node.js';

const rounds = 3;
const workers = 8;
/** Bound on each worker's puts per round (the kill normally comes long before). */
const putsPerWorkerMax = 3000;
/** Acknowledged puts per round before the kill: drawn from the seed in this range. */
const killAfterAcksMin = 150;
const killAfterAcksMax = 1200;
const clockKey = 'clock';

/** The value of a worker's put number `seq`: identifies the put, with a size that varies. */
function valueOf(worker: number, seq: number): string {
  return `w${worker}:s${seq}:${'x'.repeat((seq * 7919) % 301)}`;
}

function parseValue(value: string): { worker: number; seq: number } | undefined {
  const match = /^w(\d+):s(\d+):/.exec(value);
  return match ? { worker: Number(match[1]), seq: Number(match[2]) } : undefined;
}

/** What the test knows about one key: the last acknowledged put and the puts that may or may not have landed. */
interface KeyModel {
  worker: number;
  /** Sequence number of the newest acknowledged put, or -1 if none was acknowledged. */
  ackedSeq: number;
  /** Puts that were in flight at a crash (never acknowledged): each may or may not be stored. */
  maybeSeqs: number[];
}

/**
 * SIGKILL during a burst of concurrent puts: every acknowledged put survives the crash with its
 * value (or a newer put of the same key), rounds after rounds on the same data dir. The schedule
 * (key spaces, kill points) comes from a printed seed; replay with KVSTORE_TEST_SEED=<seed>.
 */
describe('crash (SIGKILL) during a burst of puts, then restart on the same data dir', () => {
  const seed = testSeed();
  let single: SingleNode;
  const model = new Map<string, KeyModel>();
  const nextSeq = new Array<number>(workers).fill(0);

  beforeAll(async () => {
    console.log(`crash-restart seed ${seed} (replay: KVSTORE_TEST_SEED=${seed} npx vitest run test/integration/crash-restart.test.ts)`);
    single = await SingleNode.start('crash1');
  });

  afterAll(async () => {
    await single?.close();
  });

  /** Checks every key in the model against the restarted node. */
  async function verify(client: KvClient, round: number): Promise<void> {
    const problems: string[] = [];
    const keys = [...model.keys()];
    await inChunks(keys, 200, async (key) => {
      const entry = model.get(key)!;
      const stored = await client.getString(key);
      if (stored === undefined) {
        if (entry.ackedSeq >= 0) problems.push(`${key}: acknowledged put s${entry.ackedSeq} lost`);
        return;
      }
      const parsed = parseValue(stored);
      if (parsed === undefined || parsed.worker !== entry.worker) {
        problems.push(`${key}: unexpected value ${stored.slice(0, 40)}`);
        return;
      }
      if (stored !== valueOf(parsed.worker, parsed.seq)) problems.push(`${key}: value of s${parsed.seq} is corrupted`);
      const allowed = parsed.seq === entry.ackedSeq || (parsed.seq > entry.ackedSeq && entry.maybeSeqs.includes(parsed.seq));
      if (!allowed) problems.push(`${key}: holds s${parsed.seq}, acknowledged s${entry.ackedSeq}, unacknowledged ${entry.maybeSeqs.join(',') || 'none'}`);
    });
    expect(problems, `round ${round} (seed ${seed})`).toEqual([]);

    // The listing agrees: every acknowledged key is listed, nothing unknown is.
    const listed = new Set((await collectKeys(client.listKeys({ prefix: 'w' }))).map(String));
    for (const [key, entry] of model) {
      if (entry.ackedSeq >= 0) expect(listed.has(key), `${key} listed after round ${round} (seed ${seed})`).toBe(true);
    }
    for (const key of listed) expect(model.has(key), `unknown key ${key} (seed ${seed})`).toBe(true);
  }

  it(`keeps every acknowledged put across ${rounds} crashes`, async () => {
    const random = seededRandom(seed);
    for (let round = 1; round <= rounds; round++) {
      const client = single.client({ deadlineMs: 10_000 });
      const keysPerWorker = randomInt(random, 20, 400);
      const killAfter = randomInt(random, killAfterAcksMin, killAfterAcksMax);
      const workerSeeds = Array.from({ length: workers }, () => randomInt(random, 0, 2 ** 31));
      console.log(`round ${round}: ${workers} workers, ${keysPerWorker} keys each, kill after ${killAfter} acknowledged puts`);

      let acked = 0;
      let stop = false;
      const failures: unknown[] = [];
      const inFlight = new Map<number, { key: string; seq: number }>();
      const runWorker = async (worker: number): Promise<void> => {
        const pick = seededRandom(workerSeeds[worker]!);
        for (let i = 0; i < putsPerWorkerMax && !stop; i++) {
          const key = `w${worker}/k${randomInt(pick, 0, keysPerWorker - 1)}`;
          const seq = nextSeq[worker]!++;
          const entry = model.get(key) ?? { worker, ackedSeq: -1, maybeSeqs: [] };
          model.set(key, entry);
          inFlight.set(worker, { key, seq });
          try {
            await client.put(key, valueOf(worker, seq));
          } catch (err) {
            // The node was killed under this put: it may or may not have landed.
            entry.maybeSeqs.push(seq);
            failures.push(err);
            return;
          } finally {
            inFlight.delete(worker);
          }
          entry.ackedSeq = seq;
          acked++;
        }
      };
      const burst = Promise.all(Array.from({ length: workers }, (_, w) => runWorker(w)));

      await waitFor(`${killAfter} acknowledged puts in round ${round}`, () => acked >= killAfter || failures.length > 0, 30_000);
      expect(failures, `no put may fail before the kill (seed ${seed})`).toEqual([]);
      // A put acknowledged just before the kill: after the restart, an overwrite must win.
      await client.put(clockKey, `before-crash-${round}`);
      expect(inFlight.size, 'puts are in flight at the kill').toBeGreaterThan(0);
      await single.node.kill();
      const ackedAtKill = acked;
      await burst;
      stop = true;
      single.closeClients();
      console.log(`round ${round}: killed after ${ackedAtKill} acknowledged puts, ${failures.length} puts cut off`);
      for (const err of failures) expect(KvError.isKvError(err), String(err)).toBe(true);

      await single.node.start();
      const after = single.client({ deadlineMs: 10_000 });
      await verify(after, round);

      // The restarted node issues newer versions than anything written before the crash.
      const replaced = await after.put(clockKey, `after-restart-${round}`);
      expect(replaced.oldValue?.toString()).toBe(`before-crash-${round}`);
      expect(await after.getString(clockKey)).toBe(`after-restart-${round}`);
      single.closeClients();
    }

    // Stopped cleanly, the data dir shows the last write (after the last restart) has the newest version of all.
    expect(await single.node.stop()).toBe(0);
    const data = Repository.openReadOnly(single.node.dataDir);
    try {
      const newest = data.records.get(Buffer.from(clockKey));
      expect(newest).toBeDefined();
      expect(decodeRecordHeader(newest!).version.nodeId).toBe('crash1');
      let older = 0;
      for (const { key, value } of data.records.getRange({})) {
        if (Buffer.from(key).toString() === clockKey) continue;
        expect(compareEncodedVersions(value, newest!), Buffer.from(key).toString()).toBeLessThan(0);
        older++;
      }
      const ackedKeys = [...model.values()].filter((entry) => entry.ackedSeq >= 0).length;
      expect(older).toBeGreaterThanOrEqual(ackedKeys);
      expect(older).toBeLessThanOrEqual(model.size);
    } finally {
      await data.close();
    }
  });
});
