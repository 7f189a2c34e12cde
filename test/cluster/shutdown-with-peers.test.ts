import { afterEach, describe, expect, it } from 'vitest';
import { TestCluster } from '../helpers/cluster.js';

/**
 * A node whose peers hold long-lived replication and read streams open to it stops gracefully,
 * and the others keep serving. Without ending those streams on stop, the stop still completed,
 * but only when the shutdown grace timer cut the calls off (~10 s); the node logs that ("cutting
 * them off"), which is what the test checks instead of a duration (no timing assertions).
 */

let cluster: TestCluster | undefined;
afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

describe('graceful stop with open peer streams', () => {
  it('stops n2 cleanly (exit 0) while n1 and n3 hold streams to it, and the others keep serving', async () => {
    cluster = await TestCluster.start({ size: 3 });
    // QUORUM writes through n1 and n3 open their ReplicateStreams to n2; QUORUM reads open
    // ReadReplicaStreams (each coordinator asks one peer per read, so read enough keys).
    for (const coordinator of ['n1', 'n3']) {
      const client = cluster.client(coordinator);
      await Promise.all(Array.from({ length: 20 }, (_, i) => client.put(`${coordinator}/${i}`, `v${i}`, { consistency: 'all' })));
      await Promise.all(Array.from({ length: 20 }, (_, i) => client.getString(`${coordinator}/${i}`, { consistency: 'all' })));
    }
    const n2 = cluster.node('n2');
    const code = await n2.stop();
    const output = n2.output();
    expect(code, output).toBe(0);
    expect(n2.stdoutLines.some((l) => l.includes('stopped cleanly')), output).toBe(true);
    expect(n2.stdoutLines.some((l) => l.includes('cutting them off')), output).toBe(false);
    // The others keep serving: ALL now fails fast, QUORUM still succeeds.
    await cluster.client('n1').put('after-stop', 'ok', { consistency: 'quorum' });
    expect(await cluster.client('n3').getString('after-stop', { consistency: 'quorum' })).toBe('ok');
  });
});
