import { isIP } from 'node:net';

/**
 * What is unsafe about a node's listening setup, one sentence per problem: any port on an
 * address other than loopback without TLS, and a public API or metrics endpoint there without
 * auth. Logged at warn level at start and answered in Status (`warnings`). A pure function.
 */
export interface ListeningSetup {
  /** Public API host:port as configured (`listen`). */
  readonly listen: string;
  readonly publicTls: boolean;
  readonly auth: boolean;
  /** Peer API host:port, when the peer port is served (a cluster of more than one member). */
  readonly peerListen?: string;
  readonly peerTls: boolean;
  /** Metrics host:port, when served. */
  readonly metricsListen?: string;
  readonly metricsTls: boolean;
  /** Whether /metrics requires a token (auth set and auth.metrics is `token`). */
  readonly metricsAuth: boolean;
}

export function securityWarnings(setup: ListeningSetup): string[] {
  const warnings: string[] = [];
  if (!isLoopback(setup.listen)) {
    if (!setup.publicTls) warnings.push(`public API listens on ${setup.listen} without TLS (tls): anyone on the network path can read and alter its traffic, tokens included`);
    if (!setup.auth) warnings.push(`public API listens on ${setup.listen} without auth (auth.usersFile): anyone who can reach it can read, write and delete every key, and run Backup and Repair`);
  }
  if (setup.peerListen !== undefined && !isLoopback(setup.peerListen) && !setup.peerTls) {
    warnings.push(`peer API listens on ${setup.peerListen} without mutual TLS (peerTls): anyone who can reach it can read and overwrite every record`);
  }
  if (setup.metricsListen !== undefined && !isLoopback(setup.metricsListen)) {
    if (!setup.metricsAuth) warnings.push(`metrics listen on ${setup.metricsListen} without a token (auth with auth.metrics: token): anyone who can reach it can read the node's metrics`);
    if (!setup.metricsTls) warnings.push(`metrics listen on ${setup.metricsListen} without TLS: scrapes and their tokens travel in plaintext`);
  }
  return warnings;
}

/** Whether host:port names a loopback address (127.0.0.0/8, ::1, localhost). */
export function isLoopback(hostPort: string): boolean {
  const host = hostPort.slice(0, hostPort.lastIndexOf(':')).replace(/^\[(.*)\]$/, '$1').toLowerCase();
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  if (isIP(host) === 6) return host === '::1' || /^(0{0,4}:){7}0{0,3}1$/.test(host) || host === '::ffff:127.0.0.1';
  return false;
}
