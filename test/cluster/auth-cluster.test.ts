import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Status } from '../../src/client/index.js';
import { newToken, tokenDigest } from '../../src/server/auth/users-file.js';
import { TestCluster } from '../helpers/cluster.js';
import { makeTempDir, removeTempDir } from '../helpers/node-process.js';
import { expectCode, kvErrorOf } from '../helpers/single-node.js';

/**
 * A 3-node cluster with auth: replication between nodes is not subject to users (the peer port is
 * protected by mutual TLS, not tokens), every node enforces the same roles, and Status hides peer
 * addresses and backlogs from a user without admin.
 */
describe('auth on a 3-node cluster', () => {
  const dir = makeTempDir('kvstore-auth-cluster-');
  const adminToken = newToken();
  const readerToken = newToken();
  let cluster: TestCluster;

  beforeAll(async () => {
    const usersFile = join(dir, 'users.yaml');
    writeFileSync(
      usersFile,
      [
        'roles:',
        '  operator: { read: [""], write: [""], admin: true }',
        '  reader: { read: ["app/"] }',
        'users:',
        `  ops: { roles: [operator], tokenSha256: ${tokenDigest(adminToken).toString('hex')} }`,
        `  rita: { roles: [reader], tokenSha256: ${tokenDigest(readerToken).toString('hex')} }`,
        '',
      ].join('\n'),
    );
    cluster = await TestCluster.start({ size: 3, config: { auth: { usersFile } }, clientToken: adminToken });
  });

  afterAll(async () => {
    await cluster?.stop();
    removeTempDir(dir);
  });

  it('replicates writes made with a token; every node enforces the roles', async () => {
    await cluster.client('n1').put('app/1', 'v', { consistency: 'all' });
    for (const id of ['n2', 'n3']) {
      expect(await cluster.client(id, { token: readerToken }).getString('app/1', { consistency: 'one' })).toBe('v');
      expectCode(await kvErrorOf(cluster.client(id, { token: readerToken }).put('app/2', 'x')), Status.PERMISSION_DENIED);
      expectCode(await kvErrorOf(cluster.client(id, { token: newToken() }).get('app/1')), Status.UNAUTHENTICATED);
    }
    expect((await cluster.client('n1').verify()).differingRanges).toBe(0);
    expect((await cluster.client('n2').repair()).peers.every((p) => p.error === undefined)).toBe(true);
    expectCode(await kvErrorOf(cluster.client('n2', { token: readerToken }).repair()), Status.PERMISSION_DENIED);
  });

  it('Status without admin hides peer addresses, backlogs and paths, and keeps reachability', async () => {
    const full = await cluster.client('n1').status();
    expect(full.members.filter((m) => !m.self).every((m) => m.peer !== '')).toBe(true);
    const redacted = await cluster.client('n1', { token: readerToken }).status();
    expect(redacted.redacted).toBe(true);
    expect(redacted.dataDir).toBe('');
    expect(redacted.members.map((m) => m.nodeId)).toEqual(full.members.map((m) => m.nodeId));
    expect(redacted.members.every((m) => m.peer === '' && m.backlogBytes === 0 && m.lastExchangeError === undefined)).toBe(true);
    expect(redacted.members.every((m) => m.reachable)).toBe(true);
  });
});
