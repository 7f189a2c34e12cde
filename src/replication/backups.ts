import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Clock, systemClock } from '../platform/clock.js';
import { Repository } from '../storage/repository.js';
import { isTombstoneRecord } from '../storage/record-codec.js';
import type { PeerLink } from './peer-link.js';

/** What one node's backup holds. */
export interface NodeBackup {
  readonly path: string;
  readonly bytes: number;
  readonly keyCount: number;
  readonly createdAtMs: number;
  readonly nodeId: string;
}

/** Written next to the LMDB copy so a restore can check whose backup it is. */
export const backupManifestName = 'kvstore-backup.json';

/**
 * Takes this node's hot, consistent backup (LMDB's compacting copy) into a new directory under
 * backupDir named `<nodeId>-<UTC timestamp>-<random>`, counts its live keys from the copy itself, and
 * writes a manifest.
 */
export async function backupLocal(repo: Repository, nodeId: string, backupDir: string, clock: Clock = systemClock): Promise<NodeBackup> {
  const createdAtMs = clock.wallMs();
  const stamp = new Date(createdAtMs).toISOString().replace(/[:.]/g, '-');
  // The random suffix keeps two backups taken in the same millisecond apart.
  const path = join(backupDir, `${nodeId}-${stamp}-${randomBytes(3).toString('hex')}`);
  const { bytes } = await repo.backup(path);
  const copy = Repository.openReadOnly(path);
  let keyCount = 0;
  try {
    for (const { value } of copy.records.getRange({})) if (!isTombstoneRecord(value)) keyCount++;
  } finally {
    await copy.close();
  }
  const backup: NodeBackup = { path, bytes, keyCount, createdAtMs, nodeId };
  writeFileSync(join(path, backupManifestName), `${JSON.stringify(backup, null, 2)}\n`);
  return backup;
}

/**
 * Deletes this node's oldest backups in backupDir beyond the newest `keep` (0: keeps all), and
 * returns the paths deleted. Only directories holding a readable manifest of this node are
 * counted or touched: whatever else is in backupDir (another node's backups, a file the operator
 * put there) is left alone.
 */
export function pruneBackups(backupDir: string, nodeId: string, keep: number): string[] {
  if (keep === 0) return [];
  const own: { path: string; createdAtMs: number }[] = [];
  let names: string[];
  try {
    names = readdirSync(backupDir);
  } catch {
    return [];
  }
  for (const name of names) {
    if (!name.startsWith(`${nodeId}-`)) continue;
    const path = join(backupDir, name);
    try {
      const manifest = JSON.parse(readFileSync(join(path, backupManifestName), 'utf8')) as Partial<NodeBackup>;
      if (manifest.nodeId === nodeId && typeof manifest.createdAtMs === 'number') own.push({ path, createdAtMs: manifest.createdAtMs });
    } catch {
      // No manifest (a backup cut off half way, or not a backup): not counted, not deleted.
    }
  }
  own.sort((a, b) => b.createdAtMs - a.createdAtMs || b.path.localeCompare(a.path));
  const old = own.slice(keep).map((b) => b.path);
  for (const path of old) rmSync(path, { recursive: true, force: true });
  return old;
}

/** Asks a peer to take its own backup. */
export async function backupPeer(link: PeerLink, selfId: string, timeoutMs: number): Promise<NodeBackup> {
  const res = await link.client.backup({ fromNodeId: selfId }, { signal: link.clock.timeoutSignal(timeoutMs) });
  return { path: res.path, bytes: Number(res.bytes), keyCount: Number(res.keyCount), createdAtMs: Number(res.createdAtUnixMs), nodeId: res.nodeId };
}
