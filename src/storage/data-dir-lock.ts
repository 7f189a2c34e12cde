import { closeSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';

/** Thrown when another live process holds the data directory. */
export class DataDirLockedError extends Error {
  override name = 'DataDirLockedError';
}

/**
 * An exclusive claim on a data directory by this process, as a pid file. LMDB itself allows
 * several processes on one environment, but two kvstore nodes on one directory would issue
 * conflicting versions and replication logs, so the second one is refused. A pid file left by a
 * killed process (SIGKILL) is stale once that pid is gone, and is taken over.
 */
export class DataDirLock {
  private constructor(private readonly path: string) {}

  static acquire(dataDir: string): DataDirLock {
    const path = join(dataDir, 'kvstore.pid');
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = openSync(path, 'wx');
        writeSync(fd, `${process.pid}\n`);
        closeSync(fd);
        return new DataDirLock(path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const holder = Number.parseInt(readFileSync(path, 'utf8'), 10);
      if (Number.isInteger(holder) && holder !== process.pid && isAlive(holder)) {
        throw new DataDirLockedError(
          `data directory ${dataDir} is in use by another kvstore process (pid ${holder}); stop it or use another dataDir`,
        );
      }
      rmSync(path, { force: true }); // stale: its process is gone
    }
    throw new DataDirLockedError(`could not lock data directory ${dataDir}: another process keeps taking it`);
  }

  release(): void {
    rmSync(this.path, { force: true });
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
