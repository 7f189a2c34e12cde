import { KvClient, type KvTlsOptions } from '../../src/client/index.js';
import { makeTempDir, NodeProcess, removeTempDir } from './node-process.js';
import { TcpProxy } from './tcp-proxy.js';
import { waitFor } from './wait.js';

export interface TestClusterOptions {
  readonly size: number;
  readonly replicationFactor?: number;
  /** Extra config for every node (merged over the generated one). */
  readonly config?: Record<string, unknown>;
  /** Per-node extra config (e.g. each node's own certificate files), merged over `config`. */
  readonly nodeConfig?: (id: string) => Record<string, unknown>;
  /** TLS of the test's clients (for nodes with `tls`). */
  readonly clientTls?: KvTlsOptions;
  /** Bearer token of the test's clients by default (for nodes with `auth`; admin, to wait on Status). */
  readonly clientToken?: string;
}

/**
 * Several real node processes on 127.0.0.1, every directed peer link (a -> b) through its own
 * TcpProxy so a test can cut or black-hole any link. Node ids are n1..nN. Public ports and peer
 * ports are ephemeral; proxies follow a node to its new peer port when it restarts.
 */
export class TestCluster {
  readonly dir = makeTempDir('kvstore-cluster-');
  readonly nodes: NodeProcess[] = [];
  private readonly proxies = new Map<string, TcpProxy>();
  private readonly clients: KvClient[] = [];

  private constructor(readonly options: TestClusterOptions) {}

  static async start(options: TestClusterOptions): Promise<TestCluster> {
    const cluster = new TestCluster(options);
    try {
      await cluster.init();
    } catch (err) {
      await cluster.stop();
      throw err;
    }
    return cluster;
  }

  get ids(): string[] {
    return this.nodes.map((n) => n.id);
  }

  private async init(): Promise<void> {
    const ids = Array.from({ length: this.options.size }, (_, i) => `n${i + 1}`);
    for (const from of ids) for (const to of ids) if (from !== to) this.proxies.set(`${from}->${to}`, await new TcpProxy(undefined).start());
    for (const id of ids) {
      const members = ids.map((other) => ({ id: other, peer: other === id ? '127.0.0.1:0' : this.proxy(id, other).address }));
      this.nodes.push(
        NodeProcess.create(this.dir, id, {
          peerListen: '127.0.0.1:0',
          cluster: { members, ...(this.options.replicationFactor ? { replicationFactor: this.options.replicationFactor } : {}) },
          replication: { retryMinMs: 20, retryMaxMs: 500, probeIntervalMs: 250 },
          timeouts: { requestMs: 5_000, peerCallMs: 1_500 },
          ...this.options.config,
          ...this.options.nodeConfig?.(id),
        }),
      );
    }
    await Promise.all(this.nodes.map((n) => this.startNode(n.id)));
    await this.waitAllReachable();
  }

  /** Waits until every node sees every other member as reachable (its prober has met them). */
  async waitAllReachable(): Promise<void> {
    for (const node of this.nodes) {
      const client = this.client(node.id);
      await waitFor(`${node.id} to see every member reachable`, async () => (await client.status()).members.every((m) => m.reachable));
    }
  }

  node(id: string): NodeProcess {
    const node = this.nodes.find((n) => n.id === id);
    if (node === undefined) throw new Error(`no node ${id}`);
    return node;
  }

  proxy(from: string, to: string): TcpProxy {
    const proxy = this.proxies.get(`${from}->${to}`);
    if (proxy === undefined) throw new Error(`no link ${from}->${to}`);
    return proxy;
  }

  /** Starts (or restarts) a node and points every link towards it at its new peer port. */
  async startNode(id: string): Promise<NodeProcess> {
    const node = await this.node(id).start();
    for (const other of this.ids) if (other !== id) this.proxy(other, id).setTarget(node.peerListen);
    return node;
  }

  /** A client that talks only to node `id` (so the test controls the coordinator). */
  client(id: string, options: { deadlineMs?: number; operationStream?: boolean; token?: string } = {}): KvClient {
    const token = options.token ?? this.options.clientToken;
    const client = new KvClient({
      endpoints: [this.node(id).listen],
      deadlineMs: options.deadlineMs ?? 10_000,
      maxAttempts: 1,
      operationStream: options.operationStream,
      ...(this.options.clientTls === undefined ? {} : { tls: this.options.clientTls }),
      ...(token === undefined ? {} : { token }),
    });
    this.clients.push(client);
    return client;
  }

  /** Cuts (or black-holes) every link between `group` and the other nodes, both directions. */
  partition(group: readonly string[], mode: 'cut' | 'blackhole' = 'cut'): void {
    for (const a of group) {
      for (const b of this.ids) {
        if (group.includes(b)) continue;
        for (const p of [this.proxy(a, b), this.proxy(b, a)]) (mode === 'cut' ? p.cut() : p.blackhole());
      }
    }
  }

  heal(): void {
    for (const p of this.proxies.values()) p.heal();
  }

  async stop(): Promise<void> {
    for (const c of this.clients) c.close();
    await Promise.all(this.nodes.map((n) => n.stop()));
    await Promise.all([...this.proxies.values()].map((p) => p.close()));
    removeTempDir(this.dir);
  }

  /** Output of every node, for failure messages. */
  output(): string {
    return this.nodes.map((n) => n.output()).join('\n');
  }
}
