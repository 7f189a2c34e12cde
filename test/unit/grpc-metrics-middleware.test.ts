import { createChannel, createClient, createServer, type ServiceImplementation } from 'nice-grpc';
import { HealthDefinition } from 'nice-grpc-server-health';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InvalidRequestError } from '../../src/replication/errors.js';
import { errorMiddleware } from '../../src/server/error-middleware.js';
import { GrpcServerMetrics } from '../../src/server/grpc-metrics-middleware.js';
import { waitFor } from '../helpers/wait.js';

/**
 * The gRPC metrics middleware on an in-process server (the health service's shape: a unary Check
 * and a server-streaming Watch), outside errorMiddleware as on the node's servers.
 */
const serving = 1;

const health: ServiceImplementation<typeof HealthDefinition> = {
  async check(request) {
    if (request.service === 'invalid') throw new InvalidRequestError('no such service');
    if (request.service === 'bug') throw new Error('a bug');
    return { status: serving };
  },
  async *watch(request, context) {
    yield { status: serving };
    yield { status: serving };
    if (request.service === 'two') return;
    // Held open until the client cancels.
    await new Promise<void>((resolve) => context.signal.addEventListener('abort', () => resolve(), { once: true }));
  },
};

describe('GrpcServerMetrics middleware', () => {
  const registry = new Registry();
  const metrics = new GrpcServerMetrics(registry);
  const server = createServer().use(metrics.middleware()).use(errorMiddleware(pino({ level: 'silent' })));
  server.add(HealthDefinition, health);
  let channel: ReturnType<typeof createChannel>;

  beforeAll(async () => {
    const port = await server.listen('127.0.0.1:0');
    channel = createChannel(`127.0.0.1:${port}`);
  });

  afterAll(async () => {
    channel?.close();
    await server.shutdown();
  });

  /** The value of the sample of `name` with exactly these labels (0 if absent). */
  async function sample(name: string, labels: Record<string, string>): Promise<number> {
    const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name.replace(/_count$/, ''));
    const values = (metric?.values ?? []) as { labels: Record<string, string | number>; value: number; metricName?: string }[];
    const found = values.find((v) => (v.metricName ?? metric?.name) === name && Object.entries(labels).every(([k, l]) => v.labels[k] === l) && Object.keys(v.labels).length === Object.keys(labels).length);
    return found?.value ?? 0;
  }

  const check = { grpc_service: 'grpc.health.v1.Health', grpc_method: 'Check', grpc_type: 'unary' };
  const watch = { grpc_service: 'grpc.health.v1.Health', grpc_method: 'Watch', grpc_type: 'server_stream' };

  it('counts unary calls by the status code sent (the one errorMiddleware mapped) and times them', async () => {
    const client = createClient(HealthDefinition, channel);
    await client.check({ service: '' });
    await expect(client.check({ service: 'invalid' })).rejects.toThrow(/no such service/);
    await expect(client.check({ service: 'bug' })).rejects.toThrow(/internal error/);
    expect(await sample('kvstore_grpc_server_started_total', check)).toBe(3);
    expect(await sample('kvstore_grpc_server_handled_total', { ...check, grpc_code: 'OK' })).toBe(1);
    expect(await sample('kvstore_grpc_server_handled_total', { ...check, grpc_code: 'INVALID_ARGUMENT' })).toBe(1);
    expect(await sample('kvstore_grpc_server_handled_total', { ...check, grpc_code: 'INTERNAL' })).toBe(1);
    expect(await sample('kvstore_grpc_server_handling_seconds_count', { ...check, grpc_code: 'OK' })).toBe(1);
    // Unary messages are not counted as stream messages.
    expect(await sample('kvstore_grpc_server_msg_sent_total', check)).toBe(0);
  });

  it('times a server stream to its end, counts its messages, and a cancelled one as CANCELLED', async () => {
    const client = createClient(HealthDefinition, channel);
    let received = 0;
    for await (const _ of client.watch({ service: 'two' })) received++;
    expect(received).toBe(2);
    expect(await sample('kvstore_grpc_server_handled_total', { ...watch, grpc_code: 'OK' })).toBe(1);
    expect(await sample('kvstore_grpc_server_msg_sent_total', watch)).toBe(2);

    const controller = new AbortController();
    const held = (async () => {
      for await (const _ of client.watch({ service: 'held' }, { signal: controller.signal })) if (++received === 4) controller.abort();
    })();
    await expect(held).rejects.toThrow(/abort/i);
    await waitFor('the cancelled stream to be counted', async () => (await sample('kvstore_grpc_server_handled_total', { ...watch, grpc_code: 'CANCELLED' })) === 1);
    expect(await sample('kvstore_grpc_server_started_total', watch)).toBe(2);
    expect(await sample('kvstore_grpc_server_handling_seconds_count', { ...watch, grpc_code: 'CANCELLED' })).toBe(1);
  });
});
