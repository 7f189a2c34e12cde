import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createChannel, createClient, createClientFactory, Metadata } from 'nice-grpc';
import { HealthDefinition } from 'nice-grpc-server-health';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KVStoreDefinition } from '../../gen/kvstore/v1/kvstore.js';
import { bearerTokenMiddleware } from '../../src/client/bearer-token.js';
import { Status } from '../../src/client/index.js';
import { newToken, tokenDigest } from '../../src/server/auth/users-file.js';
import { deleteOp, getOp, putOp } from '../helpers/batch-results.js';
import { op, RawStream } from '../helpers/raw-stream.js';
import { collectKeys, describeCli, expectCode, grpcErrorOf, kvErrorOf, makeTempDir, removeTempDir, runKvstore, SingleNode } from '../helpers/single-node.js';
import { waitFor } from '../helpers/wait.js';

/**
 * Authentication and roles (auth.usersFile) on a real node process: bearer tokens, per-key and
 * per-operation permissions, admin RPCs, Status redaction, the open health service, /metrics with
 * a token, reloads on SIGHUP, and `kvstore auth token`.
 */

const roles = {
  reader: { read: ['app/'] },
  writer: { read: ['app/'], write: ['app/'] },
  operator: { read: [''], write: [''], admin: true },
  scraper: { metrics: true },
};

interface TestUser {
  readonly name: string;
  readonly roles: string[];
  readonly token: string;
}

function user(name: string, ...userRoles: string[]): TestUser {
  return { name, roles: userRoles, token: newToken() };
}

function usersYaml(users: readonly TestUser[], extraLines: readonly string[] = []): string {
  const lines = ['roles:'];
  for (const [name, role] of Object.entries(roles)) lines.push(`  ${name}: ${JSON.stringify(role)}`);
  lines.push('users:');
  for (const u of users) lines.push(`  ${u.name}: { roles: [${u.roles.join(', ')}], tokenSha256: ${tokenDigest(u.token).toString('hex')} }`);
  return [...lines, ...extraLines, ''].join('\n');
}

const bearer = (token: string) => ({ metadata: Metadata({ authorization: `Bearer ${token}` }) });

describe('auth: users, tokens and roles', () => {
  const dir = makeTempDir('kvstore-auth-');
  const usersFile = join(dir, 'users.yaml');
  const reader = user('rita', 'reader');
  const writer = user('walt', 'writer');
  const admin = user('ops', 'operator');
  const scraper = user('prom', 'scraper');
  const leaving = user('lee', 'writer');
  const users = [reader, writer, admin, scraper, leaving];
  let single: SingleNode;

  /** Sends the node SIGHUP and waits for the log line of the reload's outcome. */
  async function reload(outcome: 'users file reloaded' | 'users file reload failed'): Promise<void> {
    const before = single.node.stdoutLines.filter((l) => l.includes(outcome)).length;
    process.kill(single.node.pid!, 'SIGHUP');
    await waitFor(`the node to log "${outcome}"`, () => single.node.stdoutLines.filter((l) => l.includes(outcome)).length > before);
  }

  beforeAll(async () => {
    writeFileSync(usersFile, usersYaml(users));
    single = await SingleNode.start('auth1', { auth: { usersFile }, metricsListen: '127.0.0.1:0' }, dir);
    await single.client({ token: writer.token }).put('app/seed', 'v0');
    await single.client({ token: admin.token }).put('other/seed', 'o0');
  });

  afterAll(async () => {
    await single?.close();
  });

  it('answers UNAUTHENTICATED without a token and with a wrong or malformed one', async () => {
    const none = await kvErrorOf(single.client().get('app/seed'));
    expectCode(none, Status.UNAUTHENTICATED);
    expect(none.details).toMatch(/no credentials/);
    const wrong = await kvErrorOf(single.client({ token: newToken() }).get('app/seed'));
    expectCode(wrong, Status.UNAUTHENTICATED);
    expect(wrong.details).toMatch(/invalid token/);
    // Every RPC, unary or streaming, through a client nobody here wrote.
    const raw = single.raw();
    for (const call of [raw.get({ key: Buffer.from('app/seed'), consistency: 0 }), raw.status({}), raw.batch({ operations: [getOp('app/seed')] })]) {
      expectCode(await grpcErrorOf(call), Status.UNAUTHENTICATED);
    }
    const malformed = await grpcErrorOf(raw.get({ key: Buffer.from('app/seed'), consistency: 0 }, { metadata: Metadata({ authorization: `Basic ${reader.token}` }) }));
    expectCode(malformed, Status.UNAUTHENTICATED);
    expect(malformed.details).toMatch(/malformed authorization/);
    // Without TLS client certificates, the metadata the certificate interceptor sets means nothing.
    expectCode(await grpcErrorOf(raw.status({}, { metadata: Metadata({ 'kvstore-verified-client-cn': admin.name }) })), Status.UNAUTHENTICATED);
    const stream = new RawStream(raw);
    stream.send([op(1, getOp('app/seed'))]);
    expect((await stream.ended).code).toBe(Status.UNAUTHENTICATED);
    expect(await collectKeys(single.client({ token: reader.token }).listKeys({ prefix: 'app/' }))).toEqual([Buffer.from('app/seed')]);
  });

  it('a read-only role gets and lists its prefix, and cannot put, delete, or read or list another prefix', async () => {
    const client = single.client({ token: reader.token });
    expect(await client.getString('app/seed')).toBe('v0');
    expect(await collectKeys(client.listKeys({ prefix: 'app/' }))).toEqual([Buffer.from('app/seed')]);
    const put = await kvErrorOf(client.put('app/new', 'x'));
    expectCode(put, Status.PERMISSION_DENIED);
    expect(put.details).toMatch(/user "rita" lacks write permission on key "app\/new"/);
    expectCode(await kvErrorOf(client.delete('app/seed')), Status.PERMISSION_DENIED);
    const other = await kvErrorOf(client.get('other/seed'));
    expectCode(other, Status.PERMISSION_DENIED);
    expect(other.details).toMatch(/user "rita" lacks read permission on key "other\/seed"/);
    // A listing reaching outside the readable prefixes is refused, not cut down.
    const all = await kvErrorOf(collectKeys(client.listKeys()));
    expectCode(all, Status.PERMISSION_DENIED);
    expect(all.details).toMatch(/user "rita" lacks read permission on key prefix ""/);
    expectCode(await kvErrorOf(collectKeys(client.listKeys({ prefix: 'ap' }))), Status.PERMISSION_DENIED);
    // Nothing of the refused writes happened.
    expect(await single.client({ token: admin.token }).get('app/new')).toBeUndefined();
    expect(await single.client({ token: admin.token }).getString('app/seed')).toBe('v0');
  });

  it('checks every operation of a Batch and of an OperationStream on its own', async () => {
    const raw = single.raw();
    const batch = await raw.batch({ operations: [putOp('app/b1', '1'), putOp('other/b1', '1'), getOp('app/seed'), getOp('other/seed'), deleteOp('other/seed')] }, bearer(writer.token));
    expect(batch.results[0]!.put).toBeDefined();
    expect(batch.results[1]!.error?.code).toBe(Status.PERMISSION_DENIED);
    expect(batch.results[1]!.error?.message).toMatch(/user "walt" lacks write permission on key "other\/b1"/);
    expect(batch.results[2]!.get?.value.toString()).toBe('v0');
    expect(batch.results[3]!.error?.code).toBe(Status.PERMISSION_DENIED);
    expect(batch.results[4]!.error?.code).toBe(Status.PERMISSION_DENIED);

    // A raw OperationStream with walt's token: each operation answered on its own.
    const channel = createChannel(single.node.listen);
    try {
      const stream = new RawStream(createClientFactory().use(bearerTokenMiddleware(writer.token)).create(KVStoreDefinition, channel));
      stream.send([op(1, putOp('app/r1', '1')), op(2, putOp('other/r1', '1')), op(3, getOp('app/seed')), op(4, getOp('other/seed'))]);
      await stream.waitForAnswers([1, 2, 3, 4]);
      expect(stream.result(1).put).toBeDefined();
      expect(stream.result(2).error?.code).toBe(Status.PERMISSION_DENIED);
      expect(stream.result(2).error?.message).toMatch(/user "walt" lacks write permission on key "other\/r1"/);
      expect(stream.result(3).get?.value.toString()).toBe('v0');
      expect(stream.result(4).error?.code).toBe(Status.PERMISSION_DENIED);
      stream.end();
      expect((await stream.ended).code).toBe(Status.OK);
    } finally {
      channel.close();
    }
    // The SDK's own transports: calls coalesced onto one stream message, and onto one Batch call.
    for (const operationStream of [true, false]) {
      const client = single.client({ token: writer.token, operationStream });
      const results = await Promise.allSettled([client.put('app/s1', 'a'), client.put('other/s1', 'b'), client.get('app/seed'), client.get('other/seed')]);
      expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'rejected']);
      for (const r of [results[1], results[3]]) expectCode((r as PromiseRejectedResult).reason, Status.PERMISSION_DENIED);
    }
    const admins = single.client({ token: admin.token });
    expect(await admins.getString('app/b1')).toBe('1');
    expect(await admins.getString('app/s1')).toBe('a');
    expect(await admins.get('other/b1')).toBeUndefined();
    expect(await admins.get('other/r1')).toBeUndefined();
    expect(await admins.getString('app/r1')).toBe('1');
    expect(await admins.get('other/s1')).toBeUndefined();
    expect(await admins.getString('other/seed')).toBe('o0');
  });

  it('Backup, Verify and Repair need admin; Status without admin is redacted', async () => {
    const reading = single.client({ token: reader.token });
    for (const [name, call] of [
      ['Backup', () => reading.backup()],
      ['Verify', () => reading.verify()],
      ['Repair', () => reading.repair()],
    ] as const) {
      const error = await kvErrorOf(call());
      expectCode(error, Status.PERMISSION_DENIED);
      expect(error.details).toContain(`user "rita" lacks admin permission, which ${name} needs`);
    }
    const admins = single.client({ token: admin.token });
    expect((await admins.backup()).path).toContain(single.node.dataDir);
    expect((await admins.verify()).differingRanges).toBe(0);
    expect((await admins.repair()).peers).toEqual([]);

    const full = await admins.status();
    expect(full.redacted).toBe(false);
    expect(full.dataDir).toBe(single.node.dataDir);
    const redacted = await reading.status();
    expect(redacted.redacted).toBe(true);
    expect(redacted.dataDir).toBe('');
    expect(redacted.members.every((m) => m.peer === '' && m.backlogEntries === 0)).toBe(true);
    expect(redacted.keyCount).toBe(full.keyCount);
    // On loopback only, with auth: nothing to warn about.
    expect(full.warnings).toEqual([]);
  });

  it('leaves the health service open', async () => {
    const channel = createChannel(single.node.listen);
    try {
      const health = createClient(HealthDefinition, channel);
      expect((await health.check({ service: '' })).status).toBe(1); // SERVING
    } finally {
      channel.close();
    }
  });

  it('/metrics needs the token of a user with metrics (or admin)', async () => {
    const url = `http://${single.node.metricsListen}/metrics`;
    const none = await fetch(url);
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect((await fetch(url, { headers: { authorization: `Bearer ${newToken()}` } })).status).toBe(401);
    const denied = await fetch(url, { headers: { authorization: `Bearer ${reader.token}` } });
    expect(denied.status).toBe(403);
    expect(await denied.text()).toMatch(/user "rita" lacks metrics permission/);
    for (const token of [scraper.token, admin.token]) {
      const ok = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
      expect(ok.status).toBe(200);
      expect(await ok.text()).toMatch(/^kvstore_keys \d+$/m);
    }
  });

  it('a bad users file on SIGHUP keeps the previous one; a removed token stops working without a restart, on open streams too', async () => {
    const pid = single.node.pid;
    const client = single.client({ token: leaving.token });
    await client.put('app/lee', '1'); // opens the SDK's OperationStream with lee's token
    writeFileSync(usersFile, usersYaml(users, ['  broken: { roles: [no-such-role] }']));
    await reload('users file reload failed');
    expect(single.node.stdoutLines.some((l) => l.includes('users.broken.roles.0') && l.includes('no-such-role'))).toBe(true);
    expect(await client.getString('app/lee')).toBe('1');

    writeFileSync(usersFile, usersYaml(users.filter((u) => u !== leaving)));
    await reload('users file reloaded');
    // The same client, the same open stream: its next operation is refused.
    const onStream = await kvErrorOf(client.get('app/lee'));
    expectCode(onStream, Status.UNAUTHENTICATED);
    expect(onStream.details).toMatch(/invalid token/);
    expectCode(await kvErrorOf(single.client({ token: leaving.token }).get('app/lee')), Status.UNAUTHENTICATED);
    expect(await single.client({ token: writer.token }).getString('app/lee')).toBe('1');
    expect(single.node.pid).toBe(pid);
    expect(single.node.running).toBe(true);
  });

  it('`kvstore auth token --user` prints a token and a line that work once pasted into the users file', async () => {
    const result = await runKvstore(['auth', 'token', '--user', 'carol', '--roles', 'reader']);
    expect(result.code, describeCli(result)).toBe(0);
    const lines = result.stdout.split('\n');
    const token = lines.find((l) => l.startsWith('kvs_'))!;
    const entry = lines.find((l) => l.trimStart().startsWith('carol:'))!;
    expect(token).toMatch(/^kvs_[A-Za-z0-9_-]{43}$/);
    expect(entry).toMatch(/^ {2}carol: \{ roles: \[reader\], tokenSha256: [0-9a-f]{64} \}$/);
    expectCode(await kvErrorOf(single.client({ token }).get('app/seed')), Status.UNAUTHENTICATED);
    writeFileSync(usersFile, `${usersYaml(users.filter((u) => u !== leaving))}${entry}\n`);
    await reload('users file reloaded');
    expect(await single.client({ token }).getString('app/seed')).toBe('v0');
    expectCode(await kvErrorOf(single.client({ token }).put('app/seed', 'no')), Status.PERMISSION_DENIED);
  });
});

describe('auth: the users file is validated at start', () => {
  it('refuses to start on a bad users file, naming the file and the path of each problem (exit 2)', async () => {
    const dir = makeTempDir('kvstore-auth-bad-');
    const usersFile = join(dir, 'users.yaml');
    writeFileSync(usersFile, 'roles:\n  r: { read: ["a/"], wirte: [] }\nusers:\n  bob: { roles: [nope], tokenSha256: xyz }\n');
    const config = join(dir, 'node.yaml');
    writeFileSync(config, `listen: 127.0.0.1:0\ndataDir: ${join(dir, 'data')}\nauth:\n  usersFile: ${usersFile}\n`);
    try {
      const result = await runKvstore(['--config', config]);
      expect(result.code, describeCli(result)).toBe(2);
      expect(result.stderr).toContain(`invalid users file ${usersFile}`);
      expect(result.stderr).toMatch(/roles\.r: Unrecognized key.*wirte/);
      expect(result.stderr).toMatch(/users\.bob\.tokenSha256: must be 64 hex digits/);
    } finally {
      removeTempDir(dir);
    }
  });
});

describe('security warnings', () => {
  let open: SingleNode | undefined;
  afterAll(async () => {
    await open?.close();
  });

  it('a node on a non-loopback address without TLS or auth says so at start and in Status', async () => {
    open = await SingleNode.start('exposed', { listen: '0.0.0.0:0' });
    const status = await open.client().status();
    expect(status.warnings.some((w) => w.includes('without auth'))).toBe(true);
    expect(status.warnings.some((w) => w.includes('without TLS'))).toBe(true);
    const warned = open.node.stdoutLines.filter((l) => l.includes('INSECURE'));
    expect(warned.map((l) => JSON.parse(l).level as number)).toEqual([40, 40]);
  });
});
