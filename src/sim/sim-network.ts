import { type CallContext, ClientError, Metadata, ServerError, Status } from 'nice-grpc';
import { PeerServiceDefinition, type PeerServiceImplementation } from '../../gen/kvstore/internal/v1/peer.js';
import type { Rng } from '../common/rng.js';
import type { PeerConnector, PeerTransport } from '../platform/peer-transport.js';
import type { SimClock, SimScheduler } from './scheduler.js';

/** How the simulated network treats each message; faults change these during a run. */
export interface NetworkConditions {
  /** One-way latency, drawn uniformly from [min, max] ms, plus `spikeMs` with probability `spikeRate`. */
  latencyMinMs: number;
  latencyMaxMs: number;
  spikeRate: number;
  spikeMs: number;
  /** A unary request or answer lost (the caller times out); on a stream, the stream breaks. */
  dropRate: number;
  /** A unary request delivered twice (the second answer is discarded): redelivery must be harmless. */
  duplicateRate: number;
}

export const calmNetwork: NetworkConditions = { latencyMinMs: 1, latencyMaxMs: 4, spikeRate: 0, spikeMs: 0, dropRate: 0, duplicateRate: 0 };

/** One incarnation of a node as the network sees it. */
export interface SimEndpoint {
  /** Changes on every restart: answers addressed to an earlier incarnation are lost. */
  readonly incarnation: number;
  readonly clock: SimClock;
  /** The replica side; undefined while the node is down. */
  service: PeerServiceImplementation | undefined;
}

type Method = keyof typeof PeerServiceDefinition.methods;
interface Codec<T> {
  encode(message: T): { finish(): Uint8Array };
  decode(bytes: Uint8Array): T;
}

/**
 * The in-memory network between simulated nodes: each call is encoded, carried after a seeded
 * latency (or lost, duplicated, delayed by a partition), decoded and handed to the other node's
 * real peer-service implementation, and its answer comes back the same way. Partitions are sets
 * of one-way cuts, so partial and asymmetric partitions are just other sets. Every delivery is an
 * event on the scheduler, run on the receiving node's clock (held while it is paused, lost once
 * it has crashed).
 */
export class SimNetwork {
  private readonly endpoints = new Map<string, SimEndpoint>();
  /** Blocked directions, as "from>to". */
  private readonly cuts = new Set<string>();
  /** Blocked directions that a heal step does not lift (a long partition), as "from>to". */
  private readonly longCuts = new Set<string>();
  /** Nodes cut off from every other node, both ways, until `healEverything` (a member gone for good, still running). */
  private readonly exiled = new Set<string>();
  /** Per direction, when the last stream message arrives: a stream is ordered. */
  conditions: NetworkConditions = { ...calmNetwork };
  /** Messages carried and lost, for the report. */
  delivered = 0;
  lost = 0;

  constructor(
    private readonly scheduler: SimScheduler,
    private readonly rng: Rng,
  ) {}

  register(id: string, endpoint: SimEndpoint): void {
    this.endpoints.set(id, endpoint);
  }

  /** Blocks messages from `from` to `to` (one way). */
  cut(from: string, to: string): void {
    this.cuts.add(`${from}>${to}`);
  }

  /** Unblocks messages from `from` to `to`. */
  restore(from: string, to: string): void {
    this.cuts.delete(`${from}>${to}`);
  }

  /** Blocks `from` -> `to` until `restoreLong` (or `healEverything`), whatever heal steps come meanwhile. */
  cutLong(from: string, to: string): void {
    this.longCuts.add(`${from}>${to}`);
  }

  restoreLong(from: string, to: string): void {
    this.longCuts.delete(`${from}>${to}`);
  }

  /** Lifts the ordinary cuts; long ones stay until they end. */
  healAll(): void {
    this.cuts.clear();
  }

  /** Cuts `id` off from every node, both ways, until `healEverything`, whatever heal steps or long cuts end meanwhile. */
  exile(id: string): void {
    this.exiled.add(id);
  }

  /** Lifts every cut, long ones and exiles too (the end of a run). */
  healEverything(): void {
    this.cuts.clear();
    this.longCuts.clear();
    this.exiled.clear();
  }

  /** The nodes at either end of a cut in force (ordinary or long). */
  cutEnds(): Set<string> {
    const ends = new Set<string>();
    for (const cut of [...this.cuts, ...this.longCuts]) for (const id of cut.split('>')) ends.add(id);
    return ends;
  }

  /** Ordinary and long cuts in force (exiles not counted). */
  get cutCount(): number {
    return this.cuts.size + this.longCuts.size;
  }

  private blocked(from: string, to: string): boolean {
    return this.cuts.has(`${from}>${to}`) || this.longCuts.has(`${from}>${to}`) || (this.exiled.size > 0 && (this.exiled.has(from) || this.exiled.has(to)));
  }

  private latency(): number {
    const c = this.conditions;
    let ms = c.latencyMinMs + this.rng.nextDouble() * (c.latencyMaxMs - c.latencyMinMs);
    if (c.spikeRate > 0 && this.rng.nextDouble() < c.spikeRate) ms += c.spikeMs;
    return ms;
  }

  /**
   * Carries one message: after a latency, unless the direction is cut or the message is lost
   * (then never). `arrive` runs on the receiver's side with the endpoint as it is then.
   */
  private carry(from: string, to: string, arrive: (endpoint: SimEndpoint | undefined) => void, atLeastMs = 0): number | undefined {
    if (this.blocked(from, to) || this.rng.nextDouble() < this.conditions.dropRate) {
      this.lost++;
      return undefined;
    }
    const atMs = Math.max(this.scheduler.now + this.latency(), atLeastMs);
    this.scheduler.at(atMs, () => {
      // A cut made while the message was on its way stops it too.
      if (this.blocked(from, to)) {
        this.lost++;
        return;
      }
      this.delivered++;
      arrive(this.endpoints.get(to));
    });
    return atMs;
  }

  /** The transport node `from` (this incarnation) uses to reach its peers. */
  connector(from: string, self: SimEndpoint): PeerConnector {
    return (to) => {
      const transport: Record<string, unknown> = {};
      for (const [name, method] of Object.entries(PeerServiceDefinition.methods)) {
        const codecs = { request: method.requestType as Codec<unknown>, response: method.responseType as Codec<unknown> };
        transport[name] = method.requestStream
          ? (requests: AsyncIterable<unknown>, options?: { signal?: AbortSignal }) => this.stream(from, self, to, name as Method, codecs, requests, options?.signal)
          : (request: unknown, options?: { signal?: AbortSignal }) => this.unary(from, self, to, name as Method, codecs, request, options?.signal);
      }
      return { transport: transport as unknown as PeerTransport, close: () => {} };
    };
  }

  private unary(from: string, self: SimEndpoint, to: string, method: Method, codecs: { request: Codec<unknown>; response: Codec<unknown> }, request: unknown, signal: AbortSignal | undefined): Promise<unknown> {
    const path = `/kvstore.internal.v1.PeerService/${PeerServiceDefinition.methods[method].name}`;
    return new Promise((resolve, reject) => {
      let settled = false;
      const onAbort = (): void => settle(() => reject(new ClientError(path, Status.DEADLINE_EXCEEDED, `simulated call cancelled: ${String((signal?.reason as Error | undefined)?.message ?? 'aborted')}`)));
      const settle = (fn: () => void): void => {
        if (settled) return;
        settled = true;
        signal?.removeEventListener('abort', onAbort);
        fn();
      };
      if (signal?.aborted === true) {
        onAbort();
        return;
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      const bytes = codecs.request.encode(request).finish();
      // The answer reaches the caller on its own clock: held while it is paused, lost if it has
      // crashed or restarted since (another incarnation).
      const answer = (fn: () => void) => (endpoint: SimEndpoint | undefined) => {
        if (endpoint === undefined || endpoint.incarnation !== self.incarnation) return;
        endpoint.clock.defer(() => settle(fn));
      };
      const copies = this.rng.nextDouble() < this.conditions.duplicateRate ? 2 : 1;
      for (let copy = 0; copy < copies; copy++) {
        this.carry(from, to, (target) => {
          if (target?.service === undefined) {
            // Connection refused: the caller learns at once (one way back).
            this.carry(to, from, answer(() => reject(new ClientError(path, Status.UNAVAILABLE, `${to} is down (simulated)`))));
            return;
          }
          const service = target.service;
          target.clock.defer(() => {
            // A node that crashed meanwhile answers nothing.
            if (target.service !== service) return;
            const handler = service[method] as unknown as (req: unknown, ctx: CallContext) => Promise<unknown>;
            Promise.resolve()
              .then(() => handler.call(service, codecs.request.decode(bytes), callContext()))
              .then(
                (response) => {
                  if (target.service !== service) return;
                  let answerBytes: Uint8Array;
                  try {
                    answerBytes = codecs.response.encode(response).finish();
                  } catch (error) {
                    // As gRPC does: an answer that does not serialize fails the call with INTERNAL.
                    this.carry(to, from, answer(() => reject(new ClientError(path, Status.INTERNAL, `answer failed to serialize: ${(error as Error).message}`))));
                    return;
                  }
                  this.carry(to, from, answer(() => resolve(codecs.response.decode(answerBytes))));
                },
                (error: unknown) => {
                  if (target.service !== service) return;
                  const e = error instanceof ServerError ? error : undefined;
                  this.carry(to, from, answer(() => reject(new ClientError(path, e?.code ?? Status.INTERNAL, e?.details ?? String((error as Error)?.message ?? error)))));
                },
              );
          });
        });
      }
    });
  }

  private async *stream(
    from: string,
    self: SimEndpoint,
    to: string,
    method: Method,
    codecs: { request: Codec<unknown>; response: Codec<unknown> },
    requests: AsyncIterable<unknown>,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<unknown> {
    const path = `/kvstore.internal.v1.PeerService/${PeerServiceDefinition.methods[method].name}`;
    const answers = new SimQueue<unknown>();
    const serverInput = new SimQueue<unknown>();
    let broken = false;
    let lastToServer = 0;
    let lastToClient = 0;
    const breakStream = (why: string): void => {
      if (broken) return;
      broken = true;
      serverInput.end();
      // The caller notices on its own clock.
      self.clock.defer(() => answers.fail(new ClientError(path, Status.UNAVAILABLE, `stream to ${to} broke (simulated): ${why}`)));
    };
    signal?.addEventListener('abort', () => breakStream('cancelled'), { once: true });
    let service: PeerServiceImplementation | undefined;
    let target: SimEndpoint | undefined;
    // Opening: the first message decides whether the peer is there.
    const opened = this.carry(from, to, (endpoint) => {
      if (endpoint?.service === undefined) {
        this.carry(to, from, () => breakStream(`${to} is down`));
        return;
      }
      target = endpoint;
      service = endpoint.service;
      const handler = service[method] as unknown as (reqs: AsyncIterable<unknown>, ctx: CallContext) => AsyncIterable<unknown>;
      const served = service;
      const node = endpoint;
      endpoint.clock.defer(() => {
        void (async () => {
          try {
            for await (const response of handler.call(served, serverInput, callContext())) {
              if (broken || node.service !== served) return;
              const bytes = codecs.response.encode(response).finish();
              const at = this.carry(to, from, (caller) => {
                if (caller === undefined || caller.incarnation !== self.incarnation) return;
                caller.clock.defer(() => answers.push(codecs.response.decode(bytes)));
              }, lastToClient);
              if (at === undefined) breakStream('an answer was lost');
              else lastToClient = at;
            }
            if (!broken) this.carry(to, from, () => breakStream('the peer ended the stream'));
          } catch (error) {
            if (!broken) this.carry(to, from, () => breakStream(`the peer failed it: ${String((error as Error)?.message ?? error)}`));
          }
        })();
      });
    });
    if (opened === undefined) breakStream('the connection attempt was lost');
    else lastToServer = opened;
    // Pump the caller's requests, in order.
    void (async () => {
      try {
        for await (const request of requests) {
          if (broken) return;
          const bytes = codecs.request.encode(request).finish();
          const at = this.carry(from, to, (endpoint) => {
            if (broken || endpoint === undefined || endpoint !== target || endpoint.service !== service) {
              breakStream(`${to} restarted or is down`);
              return;
            }
            endpoint.clock.defer(() => serverInput.push(codecs.request.decode(bytes)));
          }, lastToServer);
          if (at === undefined) breakStream('a request was lost');
          else lastToServer = at;
        }
      } catch {
        breakStream('the requests failed');
      }
    })();
    try {
      for await (const answer of answers) yield answer;
    } finally {
      breakStream('closed by the caller');
    }
  }
}

/** An async queue that can end with an error. */
class SimQueue<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private waiting: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void } | undefined;
  private ended = false;
  private error: unknown;

  push(item: T): void {
    if (this.ended) return;
    const w = this.waiting;
    if (w !== undefined) {
      this.waiting = undefined;
      w.resolve({ value: item, done: false });
    } else this.items.push(item);
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    const w = this.waiting;
    this.waiting = undefined;
    w?.resolve({ value: undefined, done: true });
  }

  fail(error: unknown): void {
    if (this.ended) return;
    this.error = error;
    this.ended = true;
    const w = this.waiting;
    this.waiting = undefined;
    w?.reject(error);
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => {
        if (this.items.length > 0) return Promise.resolve({ value: this.items.shift()!, done: false });
        if (this.ended) return this.error === undefined ? Promise.resolve({ value: undefined, done: true }) : Promise.reject(this.error);
        return new Promise((resolve, reject) => (this.waiting = { resolve, reject }));
      },
      return: () => {
        this.end();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}

/** What a handler reads of its call: no deadline of its own, no metadata (no peerTls in the simulator). */
function callContext(): CallContext {
  return {
    metadata: Metadata(),
    peer: 'simulated',
    header: Metadata(),
    sendHeader: () => {},
    trailer: Metadata(),
    signal: new AbortController().signal,
  } as unknown as CallContext;
}
