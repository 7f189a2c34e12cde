import { describe, expect, it } from 'vitest';
import { PermissionDeniedError } from '../../src/replication/errors.js';
import { checkAdmin, checkKeyPermission, checkListPermission, mayAccessKey, quoteKey } from '../../src/server/auth/authorizer.js';
import { newToken, parseUsersFile, tokenDigest, UsersFileError } from '../../src/server/auth/users-file.js';
import { isLoopback, securityWarnings } from '../../src/server/security-warnings.js';

const token = newToken();
const other = newToken();
const directory = parseUsersFile(
  [
    'roles:',
    '  a: { read: ["app/", "app/x/"], write: ["app/w/"] }',
    '  b: { read: ["shared/"], metrics: true }',
    '  root: { read: [""], write: [""], admin: true }',
    'users:',
    `  ann: { roles: [a, b], tokenSha256: ${tokenDigest(token).toString('hex').toUpperCase()} }`,
    `  boss: { roles: [root], tokenSha256: ${tokenDigest(other).toString('hex')} }`,
    '  cert-only: { roles: [b] }',
  ].join('\n'),
  'test.yaml',
);
const ann = directory.byUserName('ann')!;
const key = (text: string) => Buffer.from(text);

describe('users file', () => {
  it('finds users by token digest (hex in any case) and by name, merging their roles', () => {
    expect(directory.byTokenDigest(tokenDigest(token))?.name).toBe('ann');
    expect(directory.byTokenDigest(tokenDigest(other))?.name).toBe('boss');
    expect(directory.byTokenDigest(tokenDigest(newToken()))).toBeUndefined();
    expect(ann.read.map(String)).toEqual(['app/', 'shared/']); // app/x/ is covered by app/
    expect(ann.metrics).toBe(true);
    expect(ann.admin).toBe(false);
    expect(directory.byUserName('boss')!.metrics).toBe(true); // admin implies metrics
    expect(directory.byUserName('cert-only')!.roles).toEqual(['b']);
  });

  it('names the path of every problem', () => {
    const bad = () =>
      parseUsersFile(
        ['roles:', '  r: { read: "app/", admin: yes }', 'users:', `  x: { roles: [r, ghost], tokenSha256: ${'a'.repeat(64)} }`, `  y: { tokenSha256: ${'A'.repeat(64)} }`, '  "bad name": {}'].join('\n'),
        'f.yaml',
      );
    expect(bad).toThrow(UsersFileError);
    let message = '';
    try {
      bad();
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toContain('invalid users file f.yaml');
    expect(message).toMatch(/roles\.r\.read: /);
    expect(message).toMatch(/roles\.r\.admin: /);
    expect(message).toMatch(/users\.bad name: |users: /);
    expect(parseUsersFile.bind(null, 'users: {x: {roles: [nope]}}', 'g')).toThrow(/users\.x\.roles\.0: role "nope" is not defined/);
    expect(parseUsersFile.bind(null, `users:\n  x: { tokenSha256: ${'a'.repeat(64)} }\n  y: { tokenSha256: ${'A'.repeat(64)} }`, 'g')).toThrow(/users\.y\.tokenSha256: is the same as user "x"'s/);
    expect(parseUsersFile.bind(null, 'users: [', 'h')).toThrow(/users file h is not valid YAML/);
  });
});

describe('permission checks', () => {
  it('grants a key under one of the prefixes of the permission, and only that permission', () => {
    expect(mayAccessKey(ann, 'read', key('app/1'))).toBe(true);
    expect(mayAccessKey(ann, 'read', key('shared/1'))).toBe(true);
    expect(mayAccessKey(ann, 'read', key('ap'))).toBe(false);
    expect(mayAccessKey(ann, 'write', key('app/1'))).toBe(false);
    expect(mayAccessKey(ann, 'write', key('app/w/1'))).toBe(true);
    expect(mayAccessKey(directory.byUserName('boss')!, 'write', key('\u0000anything'))).toBe(true);
  });

  it('denials name the user, the permission and the key', () => {
    expect(() => checkKeyPermission(ann, 'write', key('app/1'))).toThrow(PermissionDeniedError);
    expect(() => checkKeyPermission(ann, 'write', key('app/1'))).toThrow('user "ann" lacks write permission on key "app/1"');
    expect(() => checkKeyPermission(ann, 'read', Buffer.from([0xff, 0x00]))).toThrow('lacks read permission on key 0xff00');
    expect(() => checkListPermission(ann, key('app/'))).not.toThrow();
    expect(() => checkListPermission(ann, key('app/sub'))).not.toThrow();
    expect(() => checkListPermission(ann, key(''))).toThrow('user "ann" lacks read permission on key prefix ""');
    expect(() => checkAdmin(ann, 'Backup')).toThrow('user "ann" lacks admin permission, which Backup needs');
    expect(quoteKey(Buffer.alloc(200, 'k'))).toMatch(/\.\.\. \(200 bytes\)$/);
  });
});

describe('security warnings', () => {
  const base = { publicTls: false, auth: false, peerTls: false, metricsTls: false, metricsAuth: false };
  it('says nothing for loopback addresses', () => {
    expect(securityWarnings({ ...base, listen: '127.0.0.1:50051', peerListen: '[::1]:50052', metricsListen: 'localhost:9464' })).toEqual([]);
  });
  it('names each port without TLS or auth on other addresses', () => {
    const warnings = securityWarnings({ ...base, listen: '0.0.0.0:50051', peerListen: '10.0.0.1:50052', metricsListen: '[::]:9464' });
    expect(warnings).toHaveLength(5);
    expect(securityWarnings({ ...base, publicTls: true, auth: true, peerTls: true, listen: '0.0.0.0:1', peerListen: '0.0.0.0:2' })).toEqual([]);
    expect(isLoopback('127.8.0.1:1')).toBe(true);
    expect(isLoopback('example.com:1')).toBe(false);
  });
});
