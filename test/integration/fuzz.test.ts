import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { type Channel, createChannel, createClient, Metadata, Status } from 'nice-grpc';
import { HealthDefinition } from 'nice-grpc-server-health';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PeerServiceDefinition } from '../../gen/kvstore/internal/v1/peer.js';
import { KVStoreDefinition } from '../../gen/kvstore/v1/kvstore.js';
import { newToken, tokenDigest } from '../../src/server/auth/users-file.js';
import { encodeRecord } from '../../src/storage/record-codec.js';
import { makeTempDir, SingleNode } from '../helpers/single-node.js';
import { unusedPort } from '../helpers/tcp-proxy.js';

/**
 * Seeded fuzzing of both APIs of a real node (issue 14, item 10): random bytes and mutations of
 * valid messages sent as the request of every RPC, with and without credentials. Every answer
 * must be a gRPC status other than INTERNAL (kept for bugs), the node must stay up (it answers
 * after each case), and a rejected request must write nothing (its record count does not move).
 *
 * Messages are sent as raw bytes through a service definition with identity serializers, so
 * nothing on the client side filters what reaches the node.
 */

const seed = Number(process.env.KVSTORE_TEST_SEED ?? Math.floor(Math.random() * 2 ** 31));
/** Cases per API and credential state; each is one RPC (bounded by count and by its deadline). */
const casesPerRun = 60;
const callDeadlineMs = 3_000;

type RawMethod = { path: string; requestStream: boolean; responseStream: boolean };
interface GenericDefinition {
  readonly fullName: string;
  readonly methods: Record<string, { readonly name: string; readonly requestStream: boolean; readonly responseStream: boolean }>;
}

/** A grpc-js style definition of every method of `definition`, sending and receiving raw bytes. */
function rawDefinition(definition: GenericDefinition) {
  const identity = (b: Buffer) => b;
  const methods: Record<string, RawMethod & Record<string, unknown>> = {};
  for (const [key, m] of Object.entries(definition.methods)) {
    methods[key] = {
      path: `/${definition.fullName}/${m.name}`,
      requestStream: m.requestStream,
      responseStream: m.responseStream,
      requestSerialize: identity,
      requestDeserialize: identity,
      responseSerialize: identity,
      responseDeserialize: identity,
      options: {},
    };
  }
  return methods;
}

/** Valid encodings to mutate: a few real requests of each API. */
function seedMessages(): Buffer[] {
  const record = encodeRecord({ version: { wallMs: Date.now(), counter: 1, nodeId: 'f2' }, tombstone: false, value: Buffer.from('v') });
  const tomb = encodeRecord({ version: { wallMs: Date.now() - 86_400_000 * 3, counter: 0, nodeId: 'f2' }, tombstone: true, value: Buffer.alloc(0) });
  const msgs = [
    KVStoreDefinition.methods.put.requestType.encode({ key: Buffer.from('fz/k'), value: Buffer.from('v'), consistency: 0, timeoutMs: 0 } as never).finish(),
    KVStoreDefinition.methods.get.requestType.encode({ key: Buffer.from('fz/k'), consistency: 0, timeoutMs: 0 } as never).finish(),
    KVStoreDefinition.methods.listKeys.requestType.encode({ prefix: Buffer.from('fz/'), startAfter: Buffer.alloc(0), limit: 5, consistency: 0 } as never).finish(),
    PeerServiceDefinition.methods.replicate.requestType.encode({ fromNodeId: 'f2', records: [{ key: Buffer.from('fz/p'), record }], wantPrevious: [0], knownPrevious: [], fromLog: true }).finish(),
    PeerServiceDefinition.methods.confirmTombstones.requestType.encode({ fromNodeId: 'f2', tombstones: [{ key: Buffer.from('fz/t'), record: tomb }] }).finish(),
    PeerServiceDefinition.methods.readReplica.requestType.encode({ fromNodeId: 'f2', keys: [Buffer.from('fz/k')], maxBytes: 0n }).finish(),
  ];
  return msgs.map((m) => Buffer.from(m));
}

/** A fuzzed request body: random bytes, or a valid message with bytes flipped, cut or appended. */
function messageArbitrary(seeds: readonly Buffer[]): fc.Arbitrary<Buffer> {
  const random = fc.uint8Array({ maxLength: 256 }).map((b) => Buffer.from(b));
  const mutated = fc
    .tuple(fc.constantFrom(...seeds), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }), fc.nat(), fc.uint8Array({ maxLength: 32 }))
    .map(([base, flips, cut, tail]) => {
      const out = Buffer.from(base);
      for (const [at, byte] of flips) if (out.length > 0) out[at % out.length] = byte;
      const kept = out.subarray(0, out.length === 0 ? 0 : out.length - (cut % Math.max(1, Math.floor(out.length / 4))));
      return Buffer.concat([kept, Buffer.from(tail)]);
    });
  return fc.oneof(random, mutated);
}

/** Sends `body` to `method`; answers 'ok' or the status code. Never throws for a gRPC status. */
async function send(client: Record<string, (...args: never[]) => unknown>, method: string, raw: RawMethod, body: Buffer, metadata: Metadata | undefined): Promise<'ok' | Status> {
  const options = { signal: AbortSignal.timeout(callDeadlineMs), metadata };
  try {
    const call = client[method] as unknown as (req: unknown, opts: unknown) => unknown;
    if (raw.requestStream) {
      async function* requests() {
        yield body;
        yield body;
      }
      const result = call(requests(), options);
      if (raw.responseStream) for await (const _ of result as AsyncIterable<unknown>) void _;
      else await result;
    } else if (raw.responseStream) {
      for await (const _ of call(body, options) as AsyncIterable<unknown>) void _;
    } else await call(body, options);
    return 'ok';
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'number') return code as Status;
    if ((err as Error).name === 'AbortError') return Status.DEADLINE_EXCEEDED;
    throw err;
  }
}

describe(`fuzzing both APIs of a real node (seed ${seed}, replay with KVSTORE_TEST_SEED=${seed})`, () => {
  const dir = makeTempDir('kvstore-fuzz-');
  const token = newToken();
  let single: SingleNode;
  const channels: Channel[] = [];

  beforeAll(async () => {
    const usersFile = join(dir, 'users.yaml');
    writeFileSync(usersFile, `roles:\n  all: { read: [""], write: [""], admin: true }\nusers:\n  fuzzer: { roles: [all], tokenSha256: ${tokenDigest(token).toString('hex')} }\n`);
    single = await SingleNode.start(
      'f1',
      {
        peerListen: '127.0.0.1:0',
        auth: { usersFile },
        cluster: { members: [{ id: 'f1', peer: '127.0.0.1:0' }, { id: 'f2', peer: `127.0.0.1:${await unusedPort()}` }], replicationFactor: 1 },
        tombstones: { graceSeconds: 86_400 },
      },
      dir,
    );
    console.log(`fuzz seed ${seed} (replay with KVSTORE_TEST_SEED=${seed})`);
  });

  afterAll(async () => {
    for (const c of channels) c.close();
    await single?.close();
  });

  const cases: { api: string; definition: GenericDefinition; address: () => string; credentials: boolean }[] = [
    { api: 'public API without credentials', definition: KVStoreDefinition, address: () => single.node.listen, credentials: false },
    { api: 'public API with a token', definition: KVStoreDefinition, address: () => single.node.listen, credentials: true },
    { api: 'peer API', definition: PeerServiceDefinition, address: () => single.node.peerListen, credentials: false },
  ];

  for (const c of cases) {
    it(`${c.api}: every answer is a status, the node stays up, a rejected request writes nothing`, async () => {
      const raw = rawDefinition(c.definition);
      const channel = createChannel(c.address());
      channels.push(channel);
      const client = createClient(raw as never, channel) as unknown as Record<string, (...args: never[]) => unknown>;
      const admin = createClient(KVStoreDefinition, createChannel(single.node.listen), { '*': { metadata: Metadata({ authorization: `Bearer ${token}` }) } });
      const health = createClient(HealthDefinition, channel);
      // Backup writes a copy to disk by design; every other RPC is fuzzed.
      const methods = Object.keys(raw).filter((m) => m !== 'backup');
      const metadata = c.credentials ? Metadata({ authorization: `Bearer ${token}` }) : undefined;
      const seen = new Map<string, number>();
      await fc.assert(
        fc.asyncProperty(fc.constantFrom(...methods), messageArbitrary(seedMessages()), async (method, body) => {
          const before = (await admin.status({})).recordCount;
          const outcome = await send(client, method, raw[method]!, body, metadata);
          seen.set(String(outcome), (seen.get(String(outcome)) ?? 0) + 1);
          if (c.api === 'peer API') {
            // The peer port serves no health service; Ping is its liveness probe.
            await createClient(PeerServiceDefinition, channel).ping({ fromNodeId: 'f2' });
          } else {
            expect((await health.check({ service: '' })).status).toBe(1);
          }
          expect(single.node.running, single.node.output()).toBe(true);
          // INTERNAL is reserved for bugs: a malformed request is INVALID_ARGUMENT.
          expect(outcome, `${method} answered INTERNAL for ${body.toString('hex')}`).not.toBe(Status.INTERNAL);
          if (outcome !== 'ok') expect((await admin.status({})).recordCount, `${method} answered ${Status[outcome]} but wrote`).toBe(before);
          if (c.api === 'public API without credentials') expect(outcome, `${method} without credentials`).toBe(Status.UNAUTHENTICATED);
        }),
        { seed: seed + cases.indexOf(c), numRuns: casesPerRun, endOnFailure: true },
      );
      console.log(`${c.api}: outcomes ${[...seen].map(([k, n]) => `${k === 'ok' ? 'OK' : Status[Number(k)]} ${n}`).join(', ')}`);
    });
  }
});
