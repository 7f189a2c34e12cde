import { createServer, type Server, type Socket, connect } from 'node:net';

export type ProxyMode = 'open' | 'cut' | 'blackhole';

/**
 * A TCP proxy on 127.0.0.1 for one directed peer link, that a test can break:
 * - `open`: forwards both ways to the target;
 * - `cut`: refuses new connections and resets existing ones (a crashed or firewalled peer);
 * - `blackhole`: accepts connections and silently drops everything (a partition where packets
 *   vanish: the caller only notices through its deadlines).
 * `heal()` returns to `open` and drops connections opened in the broken state.
 */
export class TcpProxy {
  private mode: ProxyMode = 'open';
  private readonly sockets = new Set<Socket>();
  private server!: Server;
  port = 0;

  constructor(public target: string | undefined) {}

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  async start(): Promise<this> {
    this.server = createServer((client) => this.accept(client));
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as { port: number }).port;
    return this;
  }

  setTarget(target: string): void {
    this.target = target;
  }

  cut(): void {
    this.mode = 'cut';
    this.dropAll();
  }

  blackhole(): void {
    this.mode = 'blackhole';
    this.dropAll();
  }

  heal(): void {
    this.mode = 'open';
    this.dropAll();
  }

  async close(): Promise<void> {
    this.dropAll();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: Socket): void {
    this.track(client);
    client.on('error', () => client.destroy());
    if (this.mode === 'cut' || this.target === undefined) {
      client.resetAndDestroy();
      return;
    }
    if (this.mode === 'blackhole') {
      client.on('data', () => {}); // read and drop
      return;
    }
    const [host, port] = [this.target.slice(0, this.target.lastIndexOf(':')), Number(this.target.slice(this.target.lastIndexOf(':') + 1))];
    const upstream = connect({ port, host, noDelay: true });
    // Without TCP_NODELAY, Nagle plus delayed ACKs add ~40 ms to every small gRPC message.
    client.setNoDelay(true);
    this.track(upstream);
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
  }

  private track(socket: Socket): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
  }

  private dropAll(): void {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }
}

/** A 127.0.0.1 port nothing listens on right now (e.g. for a configured member that is absent). */
export async function unusedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
