import { afterEach, describe, expect, it } from 'vitest';
import { TestCluster } from '../helpers/cluster.js';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { makeTempDir, removeTempDir } from '../helpers/node-process.js';
import { describeCli, runKvstore } from '../helpers/single-node.js';
import { waitFor } from '../helpers/wait.js';
import { healthOf } from '../helpers/probes.js';

let cluster: TestCluster | undefined;
afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

const graceSeconds = 10;

describe('the last node standing', () => {
  it('keeps serving every key, reports SERVING, and takes its peer back, however long the peer is away', async () => {
    cluster = await TestCluster.start({ size: 2, config: { tombstones: { graceSeconds } } });
    const n1 = cluster.client('n1');
    await n1.put('only-copy', 'precious', { consistency: 'all' });
    await cluster.node('n2').stop();
    const stoppedAt = Date.now();
    await waitFor('the peer to be away longer than the grace', () => Date.now() > stoppedAt + (graceSeconds + 3) * 1000, (graceSeconds + 15) * 1000);
    // The old guard quarantined n1 here (FAILED_PRECONDITION, "wipe the data dir") although it
    // held the only up-to-date copy of everything.
    expect(await n1.getString('only-copy', { consistency: 'one' })).toBe('precious');
    await n1.put('written-alone', 'yes', { consistency: 'one' });
    expect(await healthOf(cluster.node('n1').listen)).toBe(1); // SERVING
    await cluster.startNode('n2');
    await cluster.waitAllReachable();
    const n2 = cluster.client('n2');
    await waitFor('n2 to catch up', async () => (await n2.getString('written-alone', { consistency: 'one' })) === 'yes');
    expect(await n2.getString('only-copy', { consistency: 'all' })).toBe('precious');
  });

  it('refuses a tombstones.graceSeconds below the minimum at start, saying why', async () => {
    const dir = makeTempDir();
    try {
      const path = join(dir, 'node.yaml');
      writeFileSync(path, stringify({ nodeId: 'g1', listen: '127.0.0.1:0', dataDir: join(dir, 'data'), tombstones: { graceSeconds: 3 } }));
      const result = await runKvstore(['--config', path]);
      expect(result.code, describeCli(result)).toBe(2);
      expect(result.stderr).toMatch(/graceSeconds.*at least 10/);
    } finally {
      removeTempDir(dir);
    }
  });
});
