import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { createChannel, createClient, type Channel } from 'nice-grpc';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Consistency, KVStoreDefinition, type OperationStreamRequest } from '../../gen/kvstore/v1/kvstore.js';
import { PushQueue } from '../../src/common/push-queue.js';
import { SingleNode } from '../helpers/single-node.js';
import { waitFor } from '../helpers/wait.js';

/**
 * Per-connection limits (config `connections.*`, src/server/connection-limits.ts) on a real node:
 * a cap on streams open at once per connection, an idle timeout, and keepalive pings that close
 * the connection of a client that stopped answering (here: a client process frozen with SIGSTOP,
 * like a paused or vanished host).
 */
const maxConcurrentStreams = 4;
const idleTimeoutMs = 1_000;
const keepaliveTimeMs = 500;
const keepaliveTimeoutMs = 500;

/** grpc-js ConnectivityState.IDLE and READY. */
const idle = 0;
const ready = 2;

describe('connection limits', () => {
  let single: SingleNode;
  const channels: Channel[] = [];
  const children: ChildProcess[] = [];

  const metric = async (name: string): Promise<number> => {
    const page = await (await fetch(`http://${single.node.metricsListen}/metrics`)).text();
    const line = page.split('\n').find((l) => l.startsWith(`${name} `));
    expect(line, `${name} on the metrics page`).toBeDefined();
    return Number(line!.split(' ')[1]);
  };
  const channel = (): Channel => {
    // A connection of its own: grpc-js shares connections between channels to one address.
    const c = createChannel(single.node.listen, undefined, { 'grpc.use_local_subchannel_pool': 1 });
    channels.push(c);
    return c;
  };

  beforeAll(async () => {
    single = await SingleNode.start('conn1', { metricsListen: '127.0.0.1:0', connections: { maxConcurrentStreams, idleTimeoutMs, keepaliveTimeMs, keepaliveTimeoutMs } });
  });

  afterAll(async () => {
    for (const child of children) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGCONT');
        child.kill('SIGKILL');
      }
    }
    for (const c of channels) c.close();
    await single?.close();
  });

  it(`one connection gets at most ${maxConcurrentStreams} streams open at once; the others wait for one to close`, async () => {
    const c = channel();
    const client = createClient(KVStoreDefinition, c);
    const streams = Array.from({ length: maxConcurrentStreams + 2 }, () => {
      const requests = new PushQueue<OperationStreamRequest>();
      const controller = new AbortController();
      const answers = client.operationStream(requests, { signal: controller.signal })[Symbol.asyncIterator]();
      const first = answers.next().catch(() => undefined);
      requests.push({ operations: [{ id: 1, timeoutMs: 0, deadlineUnixMs: 0n, operation: { get: { key: Buffer.from('k'), consistency: Consistency.CONSISTENCY_ONE } } }] });
      return { requests, controller, first };
    });
    await waitFor('the streams the connection may open to be open on the node', async () => (await metric('kvstore_operation_streams_open')) === maxConcurrentStreams);
    // Every stream that got in has been answered; the two over the cap have not reached the node.
    const answered = await Promise.all(streams.slice(0, maxConcurrentStreams).map((s) => s.first));
    expect(answered.every((a) => a !== undefined && a.done !== true)).toBe(true);
    expect(await metric('kvstore_operation_streams_open')).toBe(maxConcurrentStreams);
    // Closing two lets the other two in.
    for (const s of streams.slice(0, 2)) {
      s.requests.close();
      s.controller.abort();
    }
    const late = await Promise.all(streams.slice(maxConcurrentStreams).map((s) => s.first));
    expect(late.every((a) => a !== undefined && a.done !== true)).toBe(true);
    for (const s of streams) {
      s.requests.close();
      s.controller.abort();
    }
    await waitFor('every stream to be closed on the node', async () => (await metric('kvstore_operation_streams_open')) === 0);
  });

  it(`closes a connection with no call open for ${idleTimeoutMs} ms (the client reconnects on its next call)`, async () => {
    const c = channel();
    const client = createClient(KVStoreDefinition, c);
    await client.put({ key: Buffer.from('idle/1'), value: Buffer.from('v'), consistency: Consistency.CONSISTENCY_ONE });
    expect(c.getConnectivityState(false)).toBe(ready);
    // The client's own idle timer is 30 minutes: going idle within seconds is the node's doing.
    await waitFor('the node to close the idle connection', () => c.getConnectivityState(false) === idle, 15_000);
    const again = await client.get({ key: Buffer.from('idle/1'), consistency: Consistency.CONSISTENCY_ONE });
    expect(again.value.toString()).toBe('v');
  });

  it('closes the connection of a client that stops answering keepalive pings, ending its open stream', async () => {
    // A client process that opens an OperationStream, says so, and is then frozen.
    const script = [
      `import { createChannel, createClient } from 'nice-grpc';`,
      `import { KVStoreDefinition } from ${JSON.stringify(join(process.cwd(), 'dist/gen/kvstore/v1/kvstore.js'))};`,
      `const client = createClient(KVStoreDefinition, createChannel(${JSON.stringify(single.node.listen)}, undefined, { 'grpc.use_local_subchannel_pool': 1 }));`,
      `async function* requests() { yield { operations: [{ id: 1, timeoutMs: 0, deadlineUnixMs: 0n, operation: { get: { key: Buffer.from('k'), consistency: 1 } } }] }; await new Promise(() => {}); }`,
      `for await (const answer of client.operationStream(requests())) { process.stdout.write('answered\\n'); }`,
    ].join('\n');
    const openBefore = await metric('kvstore_operation_streams_open');
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    await once(child.stdout!, 'data');
    expect(await metric('kvstore_operation_streams_open')).toBe(openBefore + 1);
    child.kill('SIGSTOP');
    // Unanswered pings: the node closes the connection, and with it the stream.
    await waitFor('the node to close the frozen client\'s connection', async () => (await metric('kvstore_operation_streams_open')) === openBefore, 15_000);
    child.kill('SIGCONT');
    child.kill('SIGKILL');
    await once(child, 'exit');
  });
});
