import { closeSync, existsSync, fsyncSync, linkSync, openSync, readFileSync, readSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Command } from 'commander';
import { ProgressBar, renderBar } from '../bench/progress-bar.js';
import { ConfigError, loadConfigFile } from '../config/load-config.js';
import { backupManifestName, type NodeBackup } from '../replication/backups.js';
import { DataDirLock, DataDirLockedError } from '../storage/data-dir-lock.js';
import { environmentFileName, Repository } from '../storage/repository.js';
import { handle, requireOptions } from './cli-program.js';

/** Adds `kvstore restore` to `parent`. */
export function addRestoreCommand(parent: Command): Command {
  const command = parent
    .command('restore')
    .summary("restore a stopped node's data from a backup")
    .description(
      [
        "Replaces a stopped node's LMDB environment with a backup's copy (kvctl backup writes one into",
        "the node's backupDir). The current environment is kept beside it as",
        'kvstore.mdb.before-restore-<time> (nothing is deleted). Started again, the node is brought up',
        "to date by its peers' replication logs and by anti-entropy.",
      ].join('\n'),
    )
    .usage('--from <dir> --config <file> [--force]')
    .addHelpText('after', '\nExit codes: 0 restored, 1 runtime failure, 2 bad arguments or config, 3 refused (the node is\nrunning, or the backup is of another node and --force is not given).')
    .option('--from <dir>', 'the backup directory (required)')
    .option('-c, --config <file>', "the node's config file (node.yaml); its dataDir is restored (required)")
    .option('--force', 'restore a backup of another node');
  return handle(command, (options: { from?: string; config?: string; force?: boolean }) => {
    requireOptions(command, 'from', 'config');
    return runRestore({ from: options.from!, config: options.config!, force: options.force === true });
  });
}

/** `kvstore restore --from <backup dir> --config node.yaml` (the help above); resolves with the exit code. */
export async function runRestore(args: { from: string; config: string; force: boolean }): Promise<number> {
  let config;
  try {
    config = loadConfigFile(args.config);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`kvstore restore: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const source = join(args.from, environmentFileName);
  if (!existsSync(source)) {
    process.stderr.write(`kvstore restore: ${args.from} is not a kvstore backup (no ${environmentFileName})\n`);
    return 2;
  }
  const backupOwner = readBackupOwner(args.from);
  if (backupOwner !== config.nodeId && !args.force) {
    process.stderr.write(`kvstore restore: backup belongs to node "${backupOwner}", config is for "${config.nodeId}" (use --force to restore anyway)\n`);
    return 3;
  }
  let lock: DataDirLock;
  try {
    lock = DataDirLock.acquire(config.dataDir);
  } catch (err) {
    if (err instanceof DataDirLockedError) {
      process.stderr.write(`kvstore restore: ${err.message}; stop the node first\n`);
      return 3;
    }
    throw err;
  }
  try {
    const target = join(config.dataDir, environmentFileName);
    // Copied beside the target and fsynced first, then renamed over it: a crash mid-restore
    // leaves the old environment (or, after the rename, the whole new one), never a torn file.
    const staged = `${target}.restoring`;
    copyWithProgress(source, staged);
    // The node checks the backup's age against the tombstone grace when it starts.
    await Repository.markRestored(staged, backupTakenAtMs(args.from, source));
    rmSync(`${staged}-lock`, { force: true });
    if (existsSync(target)) {
      // A second name for the old file, so no instant exists without an environment in place.
      const aside = `${target}.before-restore-${new Date().toISOString().replace(/[:.]/g, '-')}`;
      linkSync(target, aside);
      process.stdout.write(`previous data kept at ${aside}\n`);
    }
    rmSync(`${target}-lock`, { force: true });
    renameSync(staged, target);
    fsyncDirectory(dirname(target));
    process.stdout.write(`restored ${config.nodeId} from ${args.from} into ${config.dataDir}; start the node to bring it up to date\n`);
    return 0;
  } finally {
    lock.release();
  }
}

/** When a backup was taken: its manifest's time, else the environment file's modification time. */
function backupTakenAtMs(dir: string, environmentFile: string): number {
  try {
    const at = (JSON.parse(readFileSync(join(dir, backupManifestName), 'utf8')) as NodeBackup).createdAtMs;
    if (Number.isInteger(at) && at > 0) return at;
  } catch {
    // no manifest: a copy made by hand
  }
  return Math.floor(statSync(environmentFile).mtimeMs);
}

function readBackupOwner(dir: string): string | undefined {
  try {
    return (JSON.parse(readFileSync(join(dir, backupManifestName), 'utf8')) as NodeBackup).nodeId;
  } catch {
    const copy = Repository.openReadOnly(dir);
    const owner = copy.nodeId;
    void copy.close();
    return owner;
  }
}

/** Bytes read and written per step of the restore copy. */
const restoreChunkBytes = 8 * 1024 * 1024;

/** Copies `source` to `target` (replacing it) and fsyncs it, with a progress bar on stderr. */
function copyWithProgress(source: string, target: string): void {
  const total = statSync(source).size;
  const bar = new ProgressBar(process.stderr);
  const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(1);
  const input = openSync(source, 'r');
  let output: number | undefined;
  try {
    output = openSync(target, 'w');
    const chunk = Buffer.allocUnsafe(restoreChunkBytes);
    let copied = 0;
    for (;;) {
      const read = readSync(input, chunk, 0, chunk.length, copied);
      if (read === 0) break;
      for (let written = 0; written < read; ) written += writeSync(output, chunk, written, read - written, copied + written);
      copied += read;
      bar.update(`restoring ${renderBar(total === 0 ? 1 : copied / total)} ${mib(copied)} / ${mib(total)} MiB`);
    }
    fsyncSync(output);
    bar.done(`copied ${mib(copied)} MiB`);
  } finally {
    closeSync(input);
    if (output !== undefined) closeSync(output);
  }
}

/** Makes a rename in `dir` durable. */
function fsyncDirectory(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
