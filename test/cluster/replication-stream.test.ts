import { systemClock } from '../../src/platform/clock.js';
import { grpcPeerConnector } from '../../src/platform/peer-transport.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PeerLink } from '../../src/replication/peer-link.js';
import type { ReplicateRequest, ReplicateResponse, ReplicateStreamRequest, ReplicateStreamResponse } from '../../gen/kvstore/internal/v1/peer.js';
import { PeerStream } from '../../src/replication/peer-stream.js';
import { encodeRecord } from '../../src/storage/record-codec.js';
import { SingleNode } from '../helpers/single-node.js';
import { TcpProxy, unusedPort } from '../helpers/tcp-proxy.js';

/**
 * PeerStream over ReplicateStream (the delivery loop's link) against a real node process, through a TCP proxy
 * that can cut or black-hole the link: batches are answered in order on one stream, a failed or
 * unanswered batch rejects (within the call timeout, not hanging), and the next batch opens a
 * new stream that works once the link is back.
 */

const callMs = 1500;
const messageBytesMax = 8 * 1024 * 1024;

const wallBase = Date.now() - 60_000;
let step = 0;
function nextRecord(value: string): Buffer {
  step += 1;
  return encodeRecord({ version: { wallMs: wallBase + step, counter: 0, nodeId: 'n2' }, tombstone: false, value: Buffer.from(value) });
}

describe('PeerStream over ReplicateStream (one real node behind a TCP proxy, member n2 absent)', () => {
  let single: SingleNode;
  let proxy: TcpProxy;
  let link: PeerLink;
  let peerStream: PeerStream<ReplicateStreamRequest, ReplicateStreamResponse>;
  /** Sends one batch on the stream, as the delivery loop does. */
  const stream = {
    send: async (request: ReplicateRequest): Promise<ReplicateResponse> => (await peerStream.request({ batch: request })).ack ?? { previous: [], refused: [], previousValueOmitted: [], notReplicated: [] },
    close: () => peerStream?.close(),
  };

  beforeAll(async () => {
    single = await SingleNode.start('n1', {
      peerListen: '127.0.0.1:0',
      cluster: {
        members: [
          { id: 'n1', peer: '127.0.0.1:0' },
          { id: 'n2', peer: `127.0.0.1:${await unusedPort()}` },
        ],
      },
    });
    proxy = await new TcpProxy(single.node.peerListen).start();
    link = new PeerLink('n1', proxy.address, messageBytesMax, grpcPeerConnector()('n1', proxy.address, messageBytesMax), systemClock);
    peerStream = new PeerStream((requests, options) => link.client.replicateStream(requests, options), link.id, callMs, systemClock);
  });

  afterAll(async () => {
    stream?.close();
    link?.close();
    await proxy?.close();
    await single?.close();
  });

  const batch = (key: string, record: Buffer, wantPrevious: number[] = []) => ({
    fromNodeId: 'n2',
    records: [{ key: Buffer.from(key), record }],
    wantPrevious,
    knownPrevious: [],
    fromLog: true,
  });

  it('answers each batch in order on one stream, after storing it', async () => {
    const first = nextRecord('one');
    const second = nextRecord('two');
    expect((await stream.send(batch('stream/a', first))).previous).toEqual([]);
    const answer = await stream.send(batch('stream/a', second, [0]));
    expect(answer.previous.map((p) => p.record.toString('hex'))).toEqual([first.toString('hex')]);
    const stored = await link.client.readReplica({ fromNodeId: 'n2', keys: [Buffer.from('stream/a')], maxBytes: 0n });
    expect(stored.records[0]?.record.toString('hex')).toBe(second.toString('hex'));
  });

  it('rejects a batch the peer refuses, and the next batch opens a new stream that works', async () => {
    await expect(stream.send({ ...batch('stream/bad', nextRecord('x')), fromNodeId: 'intruder' })).rejects.toThrow(/not a member/);
    await stream.send(batch('stream/after-refusal', nextRecord('ok')));
  });

  it('rejects within the call timeout when the link is black-holed, and recovers once healed', async () => {
    proxy.blackhole();
    // Black-holing drops the open connection: the batch on it fails at once.
    await expect(stream.send(batch('stream/blackholed', nextRecord('lost')))).rejects.toThrow();
    // The next one opens a stream on a link that swallows everything: only the call timeout ends it.
    await expect(stream.send(batch('stream/blackholed', nextRecord('lost again')))).rejects.toThrow(/no answer from n1 within/);
    proxy.heal();
    const record = nextRecord('back');
    let delivered = false;
    for (let attempt = 0; attempt < 20 && !delivered; attempt++) {
      try {
        await stream.send(batch('stream/healed', record));
        delivered = true;
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    }
    expect(delivered, 'a batch went through once the link was healed').toBe(true);
  });

  it('rejects when the link is cut mid-stream, and recovers once healed', async () => {
    await stream.send(batch('stream/before-cut', nextRecord('before')));
    proxy.cut();
    await expect(stream.send(batch('stream/cut', nextRecord('cut')))).rejects.toThrow();
    proxy.heal();
    let delivered = false;
    for (let attempt = 0; attempt < 20 && !delivered; attempt++) {
      try {
        await stream.send(batch('stream/after-cut', nextRecord('after')));
        delivered = true;
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    }
    expect(delivered, 'a batch went through once the link was healed').toBe(true);
  });
});

describe('Replicate answers bounded in bytes (one real node)', () => {
  it('sends old values back while they fit one answer, and version headers only past it', async () => {
    const single = await SingleNode.start('n1', {
      peerListen: '127.0.0.1:0',
      cluster: { members: [{ id: 'n1', peer: '127.0.0.1:0' }, { id: 'n2', peer: `127.0.0.1:${await unusedPort()}` }] },
    });
    const link = new PeerLink('n1', single.node.peerListen, 16 * 1024 * 1024, grpcPeerConnector()('n1', single.node.peerListen, 16 * 1024 * 1024), systemClock);
    try {
      const big = (fill: number) => nextRecord(String.fromCharCode(fill).repeat(1024 * 1024 - 256));
      const keys = Array.from({ length: 6 }, (_, i) => Buffer.from(`big-${i}`));
      const olds = keys.map((_, i) => big(0x61 + i));
      await link.client.replicate({ fromNodeId: 'n2', records: keys.map((key, i) => ({ key, record: olds[i]! })), wantPrevious: [], knownPrevious: [], fromLog: true });
      const answer = await link.client.replicate({
        fromNodeId: 'n2',
        records: keys.map((key) => ({ key, record: nextRecord('new') })),
        wantPrevious: keys.map((_, i) => i),
        knownPrevious: [],
        fromLog: true,
      });
      // 4 MiB of old values fit one answer (peerAnswerBytesMax): four whole, two as headers.
      expect(answer.previousValueOmitted).toEqual([4, 5]);
      answer.previous.forEach((p, i) => {
        if (i < 4) expect(p.record.equals(olds[i]!)).toBe(true);
        else expect(p.record.equals(olds[i]!.subarray(0, p.record.length)) && p.record.length < 300).toBe(true);
      });
    } finally {
      link.close();
      await single.close();
    }
  });
});
