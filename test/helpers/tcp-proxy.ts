import { randomInt } from 'node:crypto';
import { readFileSync } from 'node:fs';
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

/**
 * A 127.0.0.1 port nothing listens on right now (for a configured member that is absent, or a
 * fixed peer port a node keeps across restarts). Drawn below the kernel's ephemeral range: a port
 * from listen(0) is one that any outgoing connection of a parallel test may take as its local
 * port the moment it is free again (a node restarting on a fixed port then fails with
 * EADDRINUSE, seen in a full run). Below the range only another bind can take it, and two draws
 * colliding among ~20,000 ports is the rare case the bind check here catches at the draw.
 * Not a seeded choice: which free port a test gets changes nothing it checks.
 */
export async function unusedPort(): Promise<number> {
  const [ephemeralLow] = ephemeralPortRange();
  const low = 10_000;
  const high = ephemeralLow - 1;
  for (let attempt = 0; attempt < unusedPortAttemptsMax; attempt++) {
    const port = high > low ? low + randomInt(high - low + 1) : 0;
    const server = createServer();
    const bound = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (!bound) continue;
    const { port: chosen } = server.address() as { port: number };
    await new Promise<void>((resolve) => server.close(() => resolve()));
    return chosen;
  }
  throw new Error(`no free port found below the ephemeral range in ${unusedPortAttemptsMax} attempts`);
}

const unusedPortAttemptsMax = 50;

/** The kernel's ephemeral port range (Linux), or the IANA one where it cannot be read. */
function ephemeralPortRange(): [number, number] {
  try {
    const [low, high] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (Number.isInteger(low) && Number.isInteger(high)) return [low!, high!];
  } catch {
    // not Linux
  }
  return [49152, 65535];
}
