import * as grpc from '@grpc/grpc-js';
import { type ChildProcess, spawn } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { Key, Value } from '../../gen/kvstore/v1/kvstore.js';

/**
 * scripts/unary-floor.mjs, the do-nothing servers BENCHMARKS.md measures the per-call floor
 * with ("What this machine allows"): each answers the Get path the load generator calls with a
 * well-formed kvstore.v1.Value, so the floor is that of successful calls.
 */

const started: ChildProcess[] = [];
afterEach(async () => {
  await Promise.all(
    started.splice(0).map((child) =>
      child.exitCode !== null || child.signalCode !== null ? undefined : new Promise<void>((resolve) => {
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
    ),
  );
});

/** Starts the script on an ephemeral port; resolves with the port it printed. */
function startFloorServer(kind: string): Promise<{ port: number; child: ChildProcess }> {
  const child = spawn(process.execPath, ['scripts/unary-floor.mjs', kind, '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  started.push(child);
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const match = /on 127\.0\.0\.1:(\d+)/.exec(out);
      if (match !== null) resolve({ port: Number(match[1]), child });
    });
    child.once('exit', (code) => reject(new Error(`unary-floor.mjs ${kind} exited (${code}) before listening: ${out}`)));
  });
}

function callGet(port: number): Promise<Value> {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const request = Buffer.from(Key.encode({ key: Buffer.from('k'), consistency: 0 }).finish());
  return new Promise<Value>((resolve, reject) => {
    client.makeUnaryRequest('/kvstore.v1.KVStore/Get', (b: Buffer) => b, (b: Buffer) => Value.decode(b), request, new grpc.Metadata(), { deadline: Date.now() + 5_000 }, (err, value) => {
      client.close();
      if (err !== null) reject(err);
      else resolve(value!);
    });
  });
}

describe('scripts/unary-floor.mjs', () => {
  for (const kind of ['http2', 'grpc-js']) {
    it(`answers Get on bare ${kind} with a found 100-byte value`, async () => {
      const { port } = await startFloorServer(kind);
      for (let i = 0; i < 3; i++) {
        const value = await callGet(port);
        expect(value.found).toBe(true);
        expect(Buffer.from(value.value).equals(Buffer.alloc(100, 7))).toBe(true);
      }
    });
  }

  it('refuses an unknown kind with its usage, exit 2', async () => {
    const child = spawn(process.execPath, ['scripts/unary-floor.mjs', 'tcp', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    started.push(child);
    let err = '';
    child.stderr!.on('data', (chunk: Buffer) => (err += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(code).toBe(2);
    expect(err).toMatch(/usage: node scripts\/unary-floor\.mjs <http2\|grpc-js> <port>/);
  });
});
