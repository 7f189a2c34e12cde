#!/usr/bin/env node
/**
 * What one durable (fdatasync'ed) LMDB commit of a single 100-byte record costs on this machine,
 * by the two paths the repository uses (BENCHMARKS.md, "Commit path"): lmdb-js's asynchronous
 * transaction (the callback runs on the main thread, the commit and fsync on lmdb-js's write
 * thread) and a synchronous one on the main thread. Reports wall-clock latency percentiles and
 * this process's CPU time (user and kernel, from /proc) per commit. Each commit is awaited before
 * the next, as with a single client. Bounded: a fixed count of commits per path.
 *
 * Usage: node dist/src/bench/commit-cost.js [--commits 2000]
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { open } from 'lmdb';

/** Keys overwritten round-robin (a store in use: puts mostly replace existing records). */
const keyCount = 1000;
const valueBytes = 100;
/** Linux clock ticks per second for /proc/<pid>/stat utime and stime. */
const ticksPerSecond = 100;

/** This process's user and kernel CPU so far, in µs (from /proc, so kernel time in fsync counts). */
function cpuMicros(): { user: number; kernel: number } {
  const fields = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ');
  return { user: (Number(fields[11]) * 1e6) / ticksPerSecond, kernel: (Number(fields[12]) * 1e6) / ticksPerSecond };
}

function percentile(sorted: readonly number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { commits: { type: 'string', default: '2000' } } });
  const commits = Number(values.commits);
  if (!Number.isInteger(commits) || commits < 10 || commits > 100_000) throw new Error('--commits must be an integer from 10 to 100000');
  const dir = mkdtempSync(join(tmpdir(), 'kvstore-commit-cost-'));
  const env = open({ path: join(dir, 'bench.mdb'), maxDbs: 2 });
  try {
    const db = env.openDB<Buffer, Buffer>({ name: 'records', encoding: 'binary', keyEncoding: 'binary' });
    const value = Buffer.alloc(valueBytes, 0x61);
    const keys = Array.from({ length: keyCount }, (_, i) => Buffer.from(`key-${i}`));
    await env.transaction(() => keys.forEach((k) => db.putSync(k, value)));
    await env.flushed;

    const paths: [string, (i: number) => Promise<unknown>][] = [
      ['async (write thread)', async (i) => {
        await env.transaction(() => db.putSync(keys[i % keyCount]!, value));
        await env.flushed;
      }],
      ['sync (main thread)', (i) => Promise.resolve(env.transactionSync(() => db.putSync(keys[i % keyCount]!, value)))],
    ];
    console.log(`${commits} commits of one ${valueBytes}-byte record per path, each awaited before the next`);
    console.log('path                   p50 µs  p90 µs  p99 µs  user CPU µs/commit  kernel CPU µs/commit');
    for (const [name, commit] of paths) {
      const latencies: number[] = [];
      const cpuBefore = cpuMicros();
      for (let i = 0; i < commits; i++) {
        const started = process.hrtime.bigint();
        await commit(i);
        latencies.push(Number(process.hrtime.bigint() - started) / 1000);
      }
      const cpuAfter = cpuMicros();
      latencies.sort((a, b) => a - b);
      const perCommit = (a: number, b: number) => ((b - a) / commits).toFixed(0);
      console.log(
        `${name.padEnd(22)} ${percentile(latencies, 0.5).toFixed(0).padStart(6)}  ${percentile(latencies, 0.9).toFixed(0).padStart(6)}  ${percentile(latencies, 0.99).toFixed(0).padStart(6)}  ` +
          `${perCommit(cpuBefore.user, cpuAfter.user).padStart(18)}  ${perCommit(cpuBefore.kernel, cpuAfter.kernel).padStart(20)}`,
      );
    }
  } finally {
    await env.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: Error) => {
  console.error(`commit-cost: ${err.message}`);
  process.exit(1);
});
