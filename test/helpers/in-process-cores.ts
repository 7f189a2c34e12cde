import { join } from 'node:path';
import { createServer, type Server } from 'nice-grpc';
import { pino } from 'pino';
import { PeerServiceDefinition } from '../../gen/kvstore/internal/v1/peer.js';
import { encodeMembership, type MembershipState } from '../../src/cluster/membership.js';
import { resolveConfig } from '../../src/config/load-config.js';
import { systemClock } from '../../src/platform/clock.js';
import { grpcPeerConnector } from '../../src/platform/peer-transport.js';
import { errorMiddleware } from '../../src/server/error-middleware.js';
import { composeNodeCore, type NodeCore } from '../../src/server/node-core.js';
import { Repository, type StorageFaults } from '../../src/storage/repository.js';
import { makeTempDir, removeTempDir } from './node-process.js';
import { TcpProxy } from './tcp-proxy.js';

export interface InProcessCoresOptions {
  readonly ids: readonly string[];
  readonly replicationFactor: number;
  /** Config sections merged over the generated config of every node (e.g. `tombstones`). */
  readonly config?: Record<string, unknown>;
  /** A membership state to store in a node's data dir before its core is built (a change in progress, ...). */
  readonly storedMembership?: (id: string) => MembershipState | undefined;
  /** Storage failures to inject into a node's repository (the simulator's seam, StorageFaults). */
  readonly storageFaults?: (id: string) => StorageFaults | undefined;
}

interface CoreEntry {
  readonly core: NodeCore;
  readonly server: Server;
}

/**
 * The replication cores of a few nodes in the test process (composeNodeCore, as a node builds
 * it: real LMDB in temp dirs, real gRPC peer links), each one's peer service on a real gRPC
 * server on 127.0.0.1. Members dial each other through a TcpProxy per node, whose port is known
 * before the cores exist. No background service is started (no delivery loops, prober,
 * anti-entropy or tombstone GC timers): a test drives the coordinator and the sweeper itself,
 * and reads or writes each node's repository directly.
 */
export class InProcessCores {
  private readonly dir = makeTempDir('kvstore-cores-');
  private readonly proxies = new Map<string, TcpProxy>();
  private readonly entries = new Map<string, CoreEntry>();
  private readonly closing = new AbortController();

  private constructor(private readonly options: InProcessCoresOptions) {}

  static async start(options: InProcessCoresOptions): Promise<InProcessCores> {
    const cores = new InProcessCores(options);
    // A start that fails half-way stops what it started.
    await cores.init().catch(async (err: unknown) => {
      await cores.stop();
      throw err;
    });
    return cores;
  }

  core(id: string): NodeCore {
    const entry = this.entries.get(id);
    if (entry === undefined) throw new Error(`no core ${id}`);
    return entry.core;
  }

  private async init(): Promise<void> {
    const { ids, replicationFactor } = this.options;
    for (const id of ids) this.proxies.set(id, await new TcpProxy(undefined).start());
    const members = ids.map((id) => ({ id, peer: this.proxies.get(id)!.address }));
    const logger = pino({ level: 'silent' });
    for (const id of ids) {
      const dataDir = join(this.dir, id);
      const stored = this.options.storedMembership?.(id);
      if (stored !== undefined) {
        const repo = Repository.open({ dataDir, nodeId: id, peers: ids.filter((p) => p !== id) });
        try {
          await repo.storeMembershipBytes(encodeMembership(stored));
        } finally {
          await repo.close();
        }
      }
      const config = resolveConfig({
        nodeId: id,
        dataDir,
        listen: '127.0.0.1:0',
        peerListen: '127.0.0.1:0',
        logLevel: 'silent',
        cluster: { members, replicationFactor },
        ...this.options.config,
      });
      const storageFaults = this.options.storageFaults?.(id);
      const core = await composeNodeCore(config, { logger, clock: systemClock, connect: grpcPeerConnector(), closing: this.closing.signal, ...(storageFaults === undefined ? {} : { storageFaults }) });
      const server = createServer().use(errorMiddleware(logger));
      server.add(PeerServiceDefinition, core.peerService);
      this.entries.set(id, { core, server });
      const port = await server.listen('127.0.0.1:0');
      this.proxies.get(id)!.setTarget(`127.0.0.1:${port}`);
    }
  }

  /** Stops every core (closing its links and repository), server and proxy, and removes the temp dir. */
  async stop(): Promise<void> {
    this.closing.abort();
    for (const { core, server } of this.entries.values()) {
      server.forceShutdown();
      await core.stop();
    }
    for (const proxy of this.proxies.values()) await proxy.close();
    removeTempDir(this.dir);
  }
}
