#!/usr/bin/env node
/**
 * What one request/answer round trip costs on this machine by each transport the store could
 * use between two processes, one request in flight at a time (as with a single client): a bare
 * TCP ping-pong, a nice-grpc unary call (the KVStore Get method answering a constant, so no
 * storage work), and a message on an open nice-grpc bidirectional stream. It is the floor under
 * every network hop of a 1-client request (BENCHMARKS.md, "Transport floor"). Reports latency
 * percentiles and the client process's CPU time per round trip. Bounded: a fixed count of round
 * trips per transport. The server is a child process this script starts and stops.
 *
 * Usage: node dist/src/bench/transport-cost.js [--round-trips 3000]
 */
import { fork } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createChannel, createClient, createServer } from 'nice-grpc';
import { KVStoreDefinition, type KVStoreServiceImplementation, type OperationStreamRequest, type OperationStreamResponse } from '../../gen/kvstore/v1/kvstore.js';
import { PushQueue } from '../common/push-queue.js';

/** Unmeasured round trips first (JIT, connection setup). */
const warmupRoundTrips = 300;
const payloadBytes = 120;

interface Ports {
  tcp: number;
  grpc: number;
}

/** The child process: a TCP echo server and a KVStore server whose Get and OperationStream answer at once. */
async function serve(): Promise<void> {
  const tcp = net.createServer((socket) => {
    socket.setNoDelay(true);
    socket.on('data', (data) => socket.write(data));
  });
  await new Promise<void>((resolve) => tcp.listen(0, '127.0.0.1', resolve));
  const value = Buffer.alloc(100);
  const unused = async (): Promise<never> => {
    throw new Error('not served by the transport probe');
  };
  const implementation: KVStoreServiceImplementation = {
    get: async () => ({ found: true, value }),
    async *operationStream(requests: AsyncIterable<OperationStreamRequest>): AsyncGenerator<OperationStreamResponse> {
      for await (const request of requests) {
        yield { results: request.operations.map((op) => ({ id: op.id, result: { get: { found: true, value } } })) };
      }
    },
    put: unused,
    delete: unused,
    batch: unused,
    // eslint-disable-next-line require-yield
    async *listKeys() {
      throw new Error('not served by the transport probe');
    },
    backup: unused,
    status: unused,
    verify: unused,
    repair: unused,
    changeMembership: unused,
  };
  const server = createServer();
  server.add(KVStoreDefinition, implementation);
  const grpc = await server.listen('127.0.0.1:0');
  process.send!({ tcp: (tcp.address() as net.AddressInfo).port, grpc } satisfies Ports);
  process.on('disconnect', () => process.exit(0));
}

function percentile(sorted: readonly number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

async function measure(name: string, roundTrips: number, roundTrip: () => Promise<unknown>): Promise<string> {
  for (let i = 0; i < warmupRoundTrips; i++) await roundTrip();
  const latencies: number[] = [];
  const cpuBefore = process.cpuUsage();
  for (let i = 0; i < roundTrips; i++) {
    const start = process.hrtime.bigint();
    await roundTrip();
    latencies.push(Number(process.hrtime.bigint() - start) / 1000);
  }
  const cpu = process.cpuUsage(cpuBefore);
  latencies.sort((a, b) => a - b);
  const cells = [percentile(latencies, 0.5), percentile(latencies, 0.9), percentile(latencies, 0.99), (cpu.user + cpu.system) / roundTrips];
  return `${name.padEnd(40)}${cells.map((c) => c.toFixed(0).padStart(14)).join('')}`;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { 'round-trips': { type: 'string', default: '3000' } } });
  const roundTrips = Number(values['round-trips']);
  if (!Number.isInteger(roundTrips) || roundTrips < 10 || roundTrips > 100_000) throw new Error('--round-trips must be an integer from 10 to 100000');
  const child = fork(fileURLToPath(import.meta.url), ['--serve']);
  try {
    const ports = await new Promise<Ports>((resolve, reject) => {
      child.once('message', (message) => resolve(message as Ports));
      child.once('exit', (code) => reject(new Error(`the probe server exited (${String(code)})`)));
    });
    const rows: string[] = [];

    const socket = net.connect(ports.tcp, '127.0.0.1');
    socket.setNoDelay(true);
    await new Promise<void>((resolve) => socket.once('connect', resolve));
    let answered: (() => void) | undefined;
    socket.on('data', () => answered?.());
    const payload = Buffer.alloc(payloadBytes);
    rows.push(await measure('TCP ping-pong', roundTrips, () => new Promise<void>((resolve) => ((answered = resolve), socket.write(payload)))));
    socket.destroy();

    const channel = createChannel(`127.0.0.1:${ports.grpc}`);
    const client = createClient(KVStoreDefinition, channel);
    const key = Buffer.from('key-000001');
    rows.push(await measure('gRPC unary call (Get)', roundTrips, () => client.get({ key, consistency: 0 })));

    const requests = new PushQueue<OperationStreamRequest>();
    const controller = new AbortController();
    const answers = client.operationStream(requests, { signal: controller.signal })[Symbol.asyncIterator]();
    let id = 0;
    rows.push(
      await measure('gRPC stream message (OperationStream)', roundTrips, () => {
        requests.push({ operations: [{ id: ++id, timeoutMs: 0, operation: { get: { key, consistency: 0 } }, deadlineUnixMs: 0n }] });
        return answers.next();
      }),
    );
    requests.close();
    controller.abort();
    channel.close();

    console.log(`${roundTrips} round trips per transport, one in flight, server in a child process`);
    console.log(`${'transport'.padEnd(40)}${['p50 µs', 'p90 µs', 'p99 µs', 'client CPU µs'].map((h) => h.padStart(14)).join('')}`);
    for (const row of rows) console.log(row);
  } finally {
    child.disconnect();
  }
}

if (process.argv.includes('--serve')) {
  void serve();
} else {
  main().catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : String(err));
    process.exitCode = 1;
  });
}
