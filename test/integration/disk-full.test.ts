import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KvError, Status } from '../../src/client/index.js';
import { makeTempDir, removeTempDir } from '../helpers/node-process.js';
import { SingleNode } from '../helpers/single-node.js';

/**
 * A real full disk: the node's data dir on a small tmpfs this test mounts (the test machines run
 * as root; `mount` failing fails the test with the reason). The filesystem is filled up with a
 * file, the node writes until it answers RESOURCE_EXHAUSTED, then the file is removed.
 */

const filesystemBytes = 24 * 1024 * 1024;
const valueBytes = 64 * 1024;
/** Upper bound on puts before the disk must be full: 24 MiB / 64 KiB, twice over. */
const putsMax = 800;

let root: string;
let mountPoint: string;
let single: SingleNode | undefined;

beforeAll(async () => {
  root = makeTempDir('kvstore-diskfull-');
  mountPoint = join(root, 'fs');
  mkdirSync(mountPoint);
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${filesystemBytes}`, 'tmpfs', mountPoint]);
  mkdirSync(join(root, 'node'));
  single = await SingleNode.start('full', { dataDir: join(mountPoint, 'data') }, join(root, 'node'));
});

afterAll(async () => {
  await single?.close();
  try {
    execFileSync('umount', [mountPoint]);
  } finally {
    removeTempDir(root);
  }
});

describe('disk full', () => {
  it('answers RESOURCE_EXHAUSTED saying the disk is full and where, applies nothing of a refused put, and serves again once space frees', async () => {
    const kv = single!.client({ deadlineMs: 10_000 });
    // Leave room for the environment to start, then fill the rest with a file we can remove.
    const filler = join(mountPoint, 'filler');
    writeFileSync(filler, Buffer.alloc(filesystemBytes - 10 * 1024 * 1024));
    const value = Buffer.alloc(valueBytes, 0x76);
    const acked: string[] = [];
    let refusal: KvError | undefined;
    for (let i = 0; i < putsMax && refusal === undefined; i++) {
      try {
        await kv.put(`fill-${i}`, value);
        acked.push(`fill-${i}`);
      } catch (err) {
        if (!(err instanceof KvError)) throw err;
        refusal = err;
      }
    }
    expect(refusal, `${acked.length} puts succeeded and none was refused`).toBeDefined();
    expect(refusal!.code, refusal!.message).toBe(Status.RESOURCE_EXHAUSTED);
    expect(refusal!.message).toMatch(/disk full/);
    expect(refusal!.message).toContain(join(mountPoint, 'data'));
    // Counts describe what is stored: every acknowledged put, and not the refused one.
    const status = await kv.status();
    expect(status.keyCount).toBe(acked.length);
    expect(await kv.get(`fill-${acked.length}`)).toBeUndefined();
    for (const key of [acked[0]!, acked[acked.length - 1]!]) expect((await kv.get(key))?.length).toBe(valueBytes);
    rmSync(filler);
    await kv.put('after-space-freed', 'ok');
    expect(await kv.getString('after-space-freed')).toBe('ok');
    expect((await kv.status()).keyCount).toBe(acked.length + 1);
    expect(single!.node.running).toBe(true);
  });
});
