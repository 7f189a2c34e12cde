import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type KvClient, KvError, Status } from '../../src/client/index.js';
import { waitFor } from '../helpers/wait.js';
import { inChunks, SingleNode } from '../helpers/single-node.js';

const workers = 16;
/** Bound on each worker's sequential puts (SIGTERM normally comes long before). */
const putsPerWorkerMax = 5000;
/** Puts fired all at once right as SIGTERM is sent. */
const burstAtSignal = 200;
/** Acknowledged puts before SIGTERM is sent. */
const ackedBeforeSignal = 300;

/** Values large enough (about 32 KiB) that a put takes a while on the wire and in the commit. */
function valueOf(key: string): string {
  return `value-of:${key}:${'v'.repeat(32 * 1024 + key.length)}`;
}

type Outcome = { key: string; ok: true; afterSignal: boolean } | { key: string; ok: false; code: Status; message: string };

/**
 * SIGTERM while puts are in flight: the node stops taking calls, lets in-flight ones finish, and
 * exits 0. Every put settles (acknowledged, or UNAVAILABLE/CANCELLED; none hangs), and every
 * acknowledged put is there after a restart.
 */
describe('graceful shutdown (SIGTERM) with puts in flight', () => {
  let single: SingleNode;

  beforeAll(async () => {
    single = await SingleNode.start('term1');
  });

  afterAll(async () => {
    await single?.close();
  });

  it('settles every put, keeps every acknowledged one, and exits 0', async () => {
    const client: KvClient = single.client({ deadlineMs: 15_000 });
    const outcomes: Outcome[] = [];
    let acked = 0;
    let inFlight = 0;
    let signalSent = false;
    let inFlightAtSignal = 0;

    const put = async (key: string): Promise<boolean> => {
      inFlight++;
      try {
        await client.put(key, valueOf(key));
        outcomes.push({ key, ok: true, afterSignal: signalSent });
        acked++;
        return true;
      } catch (err) {
        if (!KvError.isKvError(err)) throw err;
        outcomes.push({ key, ok: false, code: err.code, message: err.message });
        return false;
      } finally {
        inFlight--;
      }
    };
    const runWorker = async (worker: number): Promise<void> => {
      // Sequential puts of distinct keys until one fails (the node is going away).
      for (let i = 0; i < putsPerWorkerMax; i++) {
        if (!(await put(`term/w${String(worker).padStart(2, '0')}/${String(i).padStart(5, '0')}`))) return;
      }
    };
    const steady = Promise.all(Array.from({ length: workers }, (_, w) => runWorker(w)));

    await waitFor(`${ackedBeforeSignal} acknowledged puts with puts in flight`, () => acked >= ackedBeforeSignal && inFlight > 0, 30_000);
    // A burst goes out, and SIGTERM right behind it.
    const burst = Promise.all(Array.from({ length: burstAtSignal }, (_, i) => put(`term/burst/${String(i).padStart(4, '0')}`)));
    inFlightAtSignal = inFlight;
    signalSent = true;
    const logFrom = single.node.stdoutLines.length;
    const exitCode = single.node.stop();

    // Every put settles on its own (the client's deadline would answer DEADLINE_EXCEEDED: not allowed).
    await Promise.all([steady, burst]);
    expect(signalSent).toBe(true);
    expect(inFlightAtSignal).toBeGreaterThan(0);
    const failed = outcomes.filter((o): o is Extract<Outcome, { ok: false }> => !o.ok);
    const badCodes = failed.filter((o) => o.code !== Status.UNAVAILABLE && o.code !== Status.CANCELLED).map((o) => `${o.key}: ${o.message}`);
    expect(badCodes).toEqual([]);
    // Every worker stopped on a failure: the node stopped taking calls.
    expect(failed.length).toBeGreaterThanOrEqual(workers);
    const succeeded = outcomes.filter((o) => o.ok).map((o) => o.key);
    const reasons = new Map<string, number>();
    for (const o of failed) {
      const reason = o.message.replace(/127\.0\.0\.1:\d+/g, '<node>');
      reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
    }
    const ackedAfterSignal = outcomes.filter((o) => o.ok && o.afterSignal).length;
    console.log(
      `graceful shutdown: ${succeeded.length} puts acknowledged (${ackedAfterSignal} after SIGTERM was sent), ${failed.length} refused, ${inFlightAtSignal} in flight at SIGTERM; refusals:\n` +
        [...reasons].map(([reason, count]) => `  ${count} x ${reason}`).join('\n'),
    );

    expect(await exitCode, single.node.output()).toBe(0);
    expect(single.node.running).toBe(false);
    // The exit event can come before the last output lines are read: wait for them.
    await waitFor('the "stopped cleanly" log line', () => single.node.stdoutLines.slice(logFrom).some((line) => line.includes('stopped cleanly')), 5_000);

    // After a restart: every acknowledged put is there; a refused one is absent or intact.
    single.closeClients();
    await single.node.start();
    const after = single.client({ deadlineMs: 10_000 });
    const problems: string[] = [];
    await inChunks(outcomes, 200, async (o) => {
      const stored = await after.getString(o.key);
      if (o.ok && stored !== valueOf(o.key)) problems.push(`${o.key}: acknowledged, but reads ${stored === undefined ? 'absent' : 'a wrong value'}`);
      if (!o.ok && stored !== undefined && stored !== valueOf(o.key)) problems.push(`${o.key}: refused, reads a wrong value`);
    });
    expect(problems).toEqual([]);
    const status = await after.status();
    expect(status.keyCount).toBeGreaterThanOrEqual(succeeded.length);
    expect(status.keyCount).toBeLessThanOrEqual(outcomes.length);
  });

  it('exits 0 on SIGTERM when idle, and restarts on the same data dir', async () => {
    if (!single.node.running) await single.node.start();
    const client = single.client();
    await client.put('idle', 'x');
    single.closeClients();
    expect(await single.node.stop()).toBe(0);
    await single.node.start();
    expect(await single.client().getString('idle')).toBe('x');
  });

  it('serves a ListKeys stream that is open at SIGTERM to its end, then exits 0', async () => {
    if (!single.node.running) await single.node.start();
    // About 3 MB of keys: a listing in many batches, more than the transport buffers at once.
    const keys = Array.from({ length: 3000 }, (_, i) => `stream/${String(i).padStart(5, '0')}/${'k'.repeat(990)}`);
    const client = single.client({ deadlineMs: 20_000 });
    await inChunks(keys, 500, (key) => client.put(key, 'v'));
    const batches = client.listKeyBatches({ prefix: 'stream/' })[Symbol.asyncIterator]();
    const first = await batches.next();
    expect(first.done).toBe(false);
    const listed = [...first.value!];

    // Only lines logged from now on (earlier runs of the node log into the same buffer).
    const logFrom = single.node.stdoutLines.length;
    const exitCode = single.node.stop();
    await waitFor('the node to log that it is stopping', () => single.node.stdoutLines.slice(logFrom).some((line) => line.includes('stopping')), 10_000);
    for (;;) {
      const next = await batches.next();
      if (next.done === true) break;
      listed.push(...next.value);
    }
    expect(listed.map(String)).toEqual(keys);
    expect(await exitCode, single.node.output()).toBe(0);
    single.closeClients();
  });
});
