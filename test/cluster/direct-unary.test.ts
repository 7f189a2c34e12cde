import * as grpc from '@grpc/grpc-js';
import { Status } from 'nice-grpc';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Consistency, KeyValue, KVStoreDefinition, OldValue } from '../../gen/kvstore/v1/kvstore.js';
import { TestCluster } from '../helpers/cluster.js';

/**
 * The public Put, Get and Delete are answered by a grpc-js interceptor (src/server/direct-unary.ts),
 * not by nice-grpc's handler. Besides the answers the other tests check through it (bad input,
 * auth, late requests, metrics), that path must let go of a call its client gave up on, and answer
 * bytes that are not a request as the nice-grpc path did.
 *
 * Two real nodes, replication factor 2: with n2 paused (SIGSTOP, its connections open), a QUORUM
 * put on n1 waits for an acknowledgement that cannot come before the peer call's 5 s timeout, so
 * only its client's deadline ends it.
 */
describe('unary calls answered on grpc-js directly', () => {
  let cluster: TestCluster;
  let client: grpc.Client;
  const putPath = `/${KVStoreDefinition.fullName}/${KVStoreDefinition.methods.put.name}`;

  beforeAll(async () => {
    cluster = await TestCluster.start({ size: 2, replicationFactor: 2, config: { metricsListen: '127.0.0.1:0', timeouts: { requestMs: 10_000, peerCallMs: 5_000 } } });
    client = new grpc.Client(cluster.node('n1').listen, grpc.credentials.createInsecure());
  });

  afterAll(async () => {
    cluster?.node('n2').resume();
    client?.close();
    await cluster?.stop();
  });

  /** One unary call of `bytes` on bare grpc-js with a deadline `ms` away: its error (null if none) and answer. */
  const unary = (path: string, bytes: Buffer, ms: number) =>
    new Promise<{ error: grpc.ServiceError | null; answer: Buffer | undefined }>((resolve) => {
      client.makeUnaryRequest(path, (b: Buffer) => b, (b: Buffer) => b, bytes, new grpc.Metadata(), { deadline: Date.now() + ms }, (error, answer) => resolve({ error, answer }));
    });
  const put = (key: string, value: Buffer, consistency: Consistency, ms: number) => unary(putPath, Buffer.from(KeyValue.encode({ key: Buffer.from(key), value, consistency }).finish()), ms);
  const metricsPage = async () => (await fetch(`http://${cluster.node('n1').metricsListen}/metrics`)).text();
  const handled = (page: string, code: string): number => {
    const line = page.split('\n').find((l) => l.startsWith('kvstore_grpc_server_handled_total{') && l.includes('grpc_method="Put"') && l.includes(`grpc_code="${code}"`));
    return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
  };

  it('stops waiting when the client gives up: counted CANCELLED, its bytes released, the next call served', async () => {
    expect((await put('gives-up', Buffer.from('first'), Consistency.CONSISTENCY_QUORUM, 5_000)).error).toBeNull();
    cluster.node('n2').pause();
    const { error } = await put('gives-up', Buffer.alloc(1000), Consistency.CONSISTENCY_QUORUM, 300);
    expect(error?.code).toBe(Status.DEADLINE_EXCEEDED);
    // The handler ends as the node hears of the cancellation, well before the peer call's timeout.
    let page = '';
    for (let i = 0; i < 30 && handled(page, 'CANCELLED') === 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      page = await metricsPage();
    }
    expect(handled(page, 'CANCELLED')).toBe(1);
    expect(page).toMatch(/^kvstore_in_flight_request_bytes 0$/m);
    // ONE needs only n1: acknowledged while n2 is still paused, with the timed-out put's record
    // as the old value (stored here and queued for n2, as a write that timed out may be).
    const second = await put('gives-up', Buffer.from('second'), Consistency.CONSISTENCY_ONE, 5_000);
    expect(second.error).toBeNull();
    const old = OldValue.decode(second.answer!);
    expect(old.found).toBe(true);
    expect(old.value.length).toBe(1000);
    cluster.node('n2').resume();
  });

  it('answers bytes that are not a Put request INVALID_ARGUMENT naming the method', async () => {
    // Field 1 (key), length-delimited, claiming 100 bytes that are not there.
    const { error } = await unary(putPath, Buffer.from([0x0a, 0x64, 0x01]), 5_000);
    expect(error?.code).toBe(Status.INVALID_ARGUMENT);
    expect(error?.details).toMatch(/not a valid kvstore\.v1\.KVStore\.Put message/);
    expect(handled(await metricsPage(), 'INVALID_ARGUMENT')).toBe(1);
  });
});
