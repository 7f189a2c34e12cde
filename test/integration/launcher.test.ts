import { existsSync, readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { type BenchCluster, startBenchCluster } from '../../src/bench/bench-cluster.js';
import { KvClient } from '../../src/client/index.js';
import { createNodeConfig, launchNode, launchNodes, NodeChild } from '../../src/launcher/node-launcher.js';
import { makeTempDir, removeTempDir } from '../helpers/node-process.js';

/**
 * The node launcher (src/launcher/) that `npm run cluster`, the benchmarks and the test helpers
 * share: a failed start leaves no process behind, a paused node still stops gracefully, and the
 * benchmarks' TLS local cluster (dev certificates, fixed ports) starts and is removed again.
 */

let dir: string | undefined;
const started: NodeChild[] = [];
let bench: BenchCluster | undefined;
afterEach(async () => {
  await Promise.all(started.splice(0).map((node) => node.stop()));
  await bench?.stop();
  bench = undefined;
  if (dir !== undefined) removeTempDir(dir);
  dir = undefined;
});

describe('node launcher', () => {
  it('reads the addresses from the listening line; a paused node stops with SIGTERM, not by the SIGKILL after the grace', async () => {
    dir = makeTempDir('kvstore-launcher-');
    const { path } = createNodeConfig(dir, 'n1', { metricsListen: '127.0.0.1:0' });
    const node = await launchNode(path);
    started.push(node);
    expect(node.id).toBe('n1');
    for (const address of [node.addresses!.listen, node.addresses!.metricsListen]) expect(address).toMatch(/^127\.0\.0\.1:\d+$/);
    // Once it has answered a call it has its signal handlers (the listening line comes just before them).
    const client = new KvClient({ endpoints: [node.addresses!.listen], maxAttempts: 1 });
    try {
      expect((await client.status()).members).toHaveLength(1);
    } finally {
      client.close();
    }
    node.pause();
    expect(node.paused).toBe(true);
    const exit = await node.stop();
    expect(exit, node.outputTail()).toEqual({ code: 0, signal: null, forced: false });
    expect(node.running).toBe(false);
  });

  it('a node that does not listen in time is killed; one that exits first fails the start with its output, and launchNodes stops the others', async () => {
    dir = makeTempDir('kvstore-launcher-');
    const slow = NodeChild.spawn(createNodeConfig(dir, 'slow').path, { startDeadlineMs: 1 });
    started.push(slow);
    await expect(slow.ready).rejects.toThrow(/node slow did not start within 1 ms/);
    expect((await slow.exit).signal).toBe('SIGKILL');

    const good = createNodeConfig(dir, 'good').path;
    const bad = createNodeConfig(dir, 'bad', { noSuchSetting: true }).path;
    await expect(launchNodes([good, bad])).rejects.toThrow(/node bad exited \(code \d+, signal null\) before listening[^]*noSuchSetting/);
    // The good node was stopped: its data dir's pid lock is free, so a new start on it succeeds.
    const again = await launchNode(good);
    started.push(again);
    expect(again.addresses!.listen).toMatch(/^127\.0\.0\.1:\d+$/);
  });

  it("starts the benchmarks' TLS local cluster on free fixed ports and removes it on stop", async () => {
    bench = await startBenchCluster(2, undefined, false, true);
    expect(bench.endpoints).toHaveLength(2);
    expect(bench.nodeIds).toEqual(['n1', 'n2']);
    expect(bench.pids).toHaveLength(2);
    expect(bench.tlsCa).toContain('BEGIN CERTIFICATE');
    expect(readFileSync(`${bench.dir}/n1.yaml`, 'utf8')).toContain('peerTls');
    const benchDir = bench.dir;
    await bench.stop();
    bench = undefined;
    expect(existsSync(benchDir)).toBe(false);
  });
});
