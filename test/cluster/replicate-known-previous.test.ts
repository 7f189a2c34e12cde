import { type Channel, createChannel, createClient, Status } from 'nice-grpc';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PeerServiceClient, PeerServiceDefinition } from '../../gen/kvstore/internal/v1/peer.js';
import { encodeRecord } from '../../src/storage/record-codec.js';
import { SingleNode } from '../helpers/single-node.js';
import { unusedPort } from '../helpers/tcp-proxy.js';

/**
 * Replicate's known_previous against a real node process: the replica sends back its previous
 * record for an index in want_previous only if that record is newer than the version header the
 * sender says it already knows; otherwise an empty record. Senders that do not send
 * known_previous (or send it shorter than want_previous) get the full previous record.
 */

/** Version wall clocks well inside the node's drift bound, increasing with `step`. */
const wallBase = Date.now() - 60_000;

function recordAt(step: number, value: string, nodeId = 'n2', counter = 0): Buffer {
  return encodeRecord({ version: { wallMs: wallBase + step * 10, counter, nodeId }, tombstone: false, value: Buffer.from(value) });
}

/** The version header of an encoded record (flags, clock, node id), without the value. */
function header(record: Buffer): Buffer {
  return record.subarray(0, 10 + record[9]!);
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe('Replicate with knownPrevious (one real node, member n2 absent)', () => {
  let single: SingleNode;
  let channel: Channel;
  let peer: PeerServiceClient;

  beforeAll(async () => {
    const n2Port = await unusedPort();
    single = await SingleNode.start('n1', {
      peerListen: '127.0.0.1:0',
      cluster: {
        members: [
          { id: 'n1', peer: '127.0.0.1:0' },
          { id: 'n2', peer: `127.0.0.1:${n2Port}` },
        ],
      },
    });
    expect(single.node.peerListen, 'the node must run its peer server').not.toBe('');
    channel = createChannel(single.node.peerListen);
    peer = createClient(PeerServiceDefinition, channel);
  });

  afterAll(async () => {
    channel?.close();
    await single?.close();
  });

  /** Stores `record` for `key` as n2 would replicate it, asking nothing back. */
  async function store(key: string, record: Buffer): Promise<void> {
    const response = await peer.replicate({ fromNodeId: 'n2', records: [{ key: Buffer.from(key), record }] });
    expect(response.previous).toEqual([]);
  }

  /** What the node stores for `key` now (empty if nothing). */
  async function stored(key: string): Promise<Buffer> {
    const response = await peer.readReplica({ fromNodeId: 'n2', keys: [Buffer.from(key)] });
    expect(response.records.length).toBe(1);
    return response.records[0]!.record;
  }

  /** Replicates `record` for `key` with wantPrevious [0] (and knownPrevious if given); returns the one previous answered. */
  async function replicateWantingPrevious(key: string, record: Buffer, knownPrevious?: Buffer[]): Promise<{ key: Buffer; record: Buffer }> {
    const response = await peer.replicate({
      fromNodeId: 'n2',
      records: [{ key: Buffer.from(key), record }],
      wantPrevious: [0],
      ...(knownPrevious === undefined ? {} : { knownPrevious }),
    });
    expect(response.previous.length).toBe(1);
    expect(response.previous[0]!.key.toString()).toBe(key);
    // Whatever was answered, the newer record is applied.
    expect(hex(await stored(key))).toBe(hex(record));
    return response.previous[0]!;
  }

  it('answers the full previous record when the sender knows an older version', async () => {
    const v0 = recordAt(0, 'v0');
    const v1 = recordAt(1, 'v1');
    await store('older', v1);
    expect(hex(await stored('older'))).toBe(hex(v1));
    const previous = await replicateWantingPrevious('older', recordAt(2, 'v2'), [header(v0)]);
    expect(hex(previous.record)).toBe(hex(v1));
  });

  it('answers an empty record when the sender knows that very version', async () => {
    const v1 = recordAt(1, 'v1');
    await store('same', v1);
    const previous = await replicateWantingPrevious('same', recordAt(2, 'v2'), [header(v1)]);
    expect(previous.record.length).toBe(0);
  });

  it('answers an empty record when the sender knows a newer version', async () => {
    const v1 = recordAt(1, 'v1');
    await store('newer', v1);
    // Newer than the stored v1 but older than the record being replicated...
    expect((await replicateWantingPrevious('newer', recordAt(3, 'v3'), [header(recordAt(2, 'v2'))])).record.length).toBe(0);
    // ...and newer than both (the stored record is now v3).
    expect((await replicateWantingPrevious('newer', recordAt(4, 'v4'), [header(recordAt(9, 'v9'))])).record.length).toBe(0);
  });

  it('orders equal clocks by writer node id, as last-writer-wins does', async () => {
    const v1 = recordAt(1, 'v1', 'n2');
    await store('tie', v1);
    // Same clock, smaller node id: older than the stored record.
    expect(hex((await replicateWantingPrevious('tie', recordAt(2, 'v2'), [header(recordAt(1, 'x', 'n1'))])).record)).toBe(hex(v1));
    // Same clock as the stored v2, larger node id: newer.
    expect((await replicateWantingPrevious('tie', recordAt(3, 'v3'), [header(recordAt(2, 'x', 'n3'))])).record.length).toBe(0);
    // Same wall clock as the stored v3, higher counter: newer.
    expect((await replicateWantingPrevious('tie', recordAt(4, 'v4'), [header(recordAt(3, 'x', 'n2', 1))])).record.length).toBe(0);
  });

  it('answers the full previous record when knownPrevious is omitted or empty (older senders keep working)', async () => {
    const v1 = recordAt(1, 'v1');
    await store('omitted', v1);
    expect(hex((await replicateWantingPrevious('omitted', recordAt(2, 'v2'))).record)).toBe(hex(v1));
    await store('omitted-empty', v1);
    expect(hex((await replicateWantingPrevious('omitted-empty', recordAt(2, 'v2'), [Buffer.alloc(0)])).record)).toBe(hex(v1));
    await store('omitted-list', v1);
    expect(hex((await replicateWantingPrevious('omitted-list', recordAt(2, 'v2'), [])).record)).toBe(hex(v1));
  });

  it('answers an empty record for a key with nothing stored, whatever the sender knows', async () => {
    expect((await stored('absent-1')).length).toBe(0);
    expect((await replicateWantingPrevious('absent-1', recordAt(2, 'v2'), [header(recordAt(0, 'v0'))])).record.length).toBe(0);
    expect((await replicateWantingPrevious('absent-2', recordAt(2, 'v2'))).record.length).toBe(0);
  });

  it('pairs knownPrevious with wantPrevious by position; missing entries count as empty', async () => {
    const a1 = recordAt(1, 'a1');
    const b1 = recordAt(1, 'b1');
    const c1 = recordAt(1, 'c1');
    await store('batch-a', a1);
    await store('batch-b', b1);
    await store('batch-c', c1);
    // wantPrevious [2, 0, 1]: c is known (empty back), a is known older (full back), b has no known entry (full back).
    const response = await peer.replicate({
      fromNodeId: 'n2',
      records: [
        { key: Buffer.from('batch-a'), record: recordAt(2, 'a2') },
        { key: Buffer.from('batch-b'), record: recordAt(2, 'b2') },
        { key: Buffer.from('batch-c'), record: recordAt(2, 'c2') },
      ],
      wantPrevious: [2, 0, 1],
      knownPrevious: [header(c1), header(recordAt(0, 'a0'))],
    });
    expect(response.previous.map((p) => p.key.toString())).toEqual(['batch-c', 'batch-a', 'batch-b']);
    expect(response.previous.map((p) => hex(p.record))).toEqual(['', hex(a1), hex(b1)]);
    for (const [key, value] of [['batch-a', 'a2'], ['batch-b', 'b2'], ['batch-c', 'c2']] as const) {
      expect(hex(await stored(key))).toBe(hex(recordAt(2, value)));
    }
  });

  it('refuses a bad want_previous or known_previous with INVALID_ARGUMENT before storing anything', async () => {
    const cases = [
      { name: 'index past the records', wantPrevious: [1], knownPrevious: [] },
      { name: 'repeated index', wantPrevious: [0, 0], knownPrevious: [] },
      { name: 'malformed known version', wantPrevious: [0], knownPrevious: [Buffer.from('not a header')] },
    ];
    for (const c of cases) {
      const key = `refused-${c.name}`;
      const error = await peer
        .replicate({ fromNodeId: 'n2', records: [{ key: Buffer.from(key), record: recordAt(1, 'v1') }], wantPrevious: c.wantPrevious, knownPrevious: c.knownPrevious })
        .then(
          () => undefined,
          (e: { code?: number; details?: string }) => e,
        );
      expect(error?.code, c.name).toBe(Status.INVALID_ARGUMENT);
      expect(hex(await stored(key)), c.name).toBe('');
    }
  });

  it('answers ScanLocal to a member and refuses it to a node that is not one', async () => {
    await store('scan/one', recordAt(1, 'one'));
    const page = await peer.scanLocal({ fromNodeId: 'n2', prefix: Buffer.from('scan/'), limit: 10 });
    expect(page.records.map((r) => r.key.toString())).toEqual(['scan/one']);
    const refused = await peer.scanLocal({ fromNodeId: 'intruder', prefix: Buffer.from('scan/'), limit: 10 }).then(
      () => undefined,
      (e: { code?: number }) => e,
    );
    expect(refused?.code).toBe(Status.INVALID_ARGUMENT);
  });
});
