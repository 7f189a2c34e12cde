/**
 * A throwaway cluster of local node processes on fixed ports (for `npm run cluster` and the
 * benchmarks' `--local-cluster`): node ids n1..nN, public ports basePort+i, peer ports
 * basePort+peerPortOffset+i, every node a member of every other's list.
 */
import { mkdirSync } from 'node:fs';
import { configFileId, createNodeConfig, launchNodes, type NodeChild, type NodeConfig, stopGraceMsDefault } from './node-launcher.js';

/** Peer ports sit this far above public ports. Members need fixed peer addresses, so port 0 is not possible here. */
export const peerPortOffset = 100;
const host = '127.0.0.1';

export interface LocalClusterMember {
  readonly id: string;
  readonly peer: string;
}

/** The member list of a `size`-node local cluster on `basePort` (ids n1..nN). */
export function localClusterMembers(size: number, basePort: number): LocalClusterMember[] {
  return Array.from({ length: size }, (_, i) => ({ id: `n${i + 1}`, peer: `${host}:${basePort + peerPortOffset + i}` }));
}

export class LocalCluster {
  private constructor(readonly nodes: readonly NodeChild[]) {}

  get endpoints(): string[] {
    return this.nodes.map((n) => n.addresses?.listen ?? '');
  }

  /**
   * Writes configs for `size` nodes into `dir` and starts them. `extra` spreads over every node's
   * config (a `cluster` key replaces the generated member list); `perNode` (e.g. each node's own
   * certificate files) over that.
   */
  static async generate(
    size: number,
    dir: string,
    basePort: number,
    extra: NodeConfig = {},
    onLine?: (id: string, line: string) => void,
    perNode: (id: string) => NodeConfig = () => ({}),
    nodeArgs: readonly string[] = [],
  ): Promise<LocalCluster> {
    mkdirSync(dir, { recursive: true });
    const members = localClusterMembers(size, basePort);
    const paths = members.map(
      ({ id, peer }, i) => createNodeConfig(dir, id, { listen: `${host}:${basePort + i}`, peerListen: peer, cluster: { members }, ...extra, ...perNode(id) }).path,
    );
    return LocalCluster.launch(paths, onLine, nodeArgs);
  }

  /**
   * Starts one node per config file (each in its own process group, so a terminal's Ctrl-C
   * reaches only the launching program) and waits until every one listens. `nodeArgs`: Node's
   * own flags for every node (e.g. `--cpu-prof`).
   */
  static async launch(configPaths: readonly string[], onLine?: (id: string, line: string) => void, nodeArgs: readonly string[] = []): Promise<LocalCluster> {
    const nodes = await launchNodes(configPaths, (path) => {
      const id = configFileId(path);
      return { id, detached: true, nodeArgs, ...(onLine === undefined ? {} : { onLine: (line: string) => onLine(id, line) }) };
    });
    return new LocalCluster(nodes);
  }

  /** Stops every node (SIGTERM, SIGKILL after `graceMs`) and waits for them to exit. */
  async stop(graceMs = stopGraceMsDefault): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.stop(graceMs)));
  }
}
