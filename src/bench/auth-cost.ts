/**
 * Cost of the auth steps alone, in-process (BENCHMARKS.md, "What the auth checks cost"):
 * authenticating a bearer token (its SHA-256, the lookup, the session) and re-resolving a
 * session's user plus checking one key against its prefixes, over users files of 1, 100 and 1,000
 * users. Run: `npm run build && node dist/src/bench/auth-cost.js`.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Authenticator } from '../server/auth/authenticator.js';
import { checkKeyPermission } from '../server/auth/authorizer.js';
import { newToken, tokenDigest } from '../server/auth/users-file.js';
import { isEntryPoint } from '../common/entry-point.js';

const userCounts = [1, 100, 1000] as const;
const authenticateCalls = 200_000;
const checkCalls = 2_000_000;

export function measureAuthCost(write: (line: string) => void = (line) => process.stdout.write(`${line}\n`)): void {
  const logger = pino({ level: 'silent' });
  for (const users of userCounts) {
    const dir = mkdtempSync(join(tmpdir(), 'kvstore-auth-cost-'));
    try {
      const tokens = Array.from({ length: users }, () => newToken());
      const lines = ['roles:', '  app: { read: ["bench:", "app/", "x/"], write: ["bench:"] }', 'users:', ...tokens.map((t, i) => `  u${i}: { roles: [app], tokenSha256: ${tokenDigest(t).toString('hex')} }`)];
      writeFileSync(join(dir, 'users.yaml'), `${lines.join('\n')}\n`);
      const auth = new Authenticator(join(dir, 'users.yaml'), logger);
      const header = `Bearer ${tokens[users - 1]!}`;
      for (let i = 0; i < authenticateCalls / 20; i++) auth.authenticate(header);
      let start = process.hrtime.bigint();
      for (let i = 0; i < authenticateCalls; i++) auth.authenticate(header);
      const authenticateNs = Number(process.hrtime.bigint() - start) / authenticateCalls;
      const session = auth.authenticate(header);
      const key = Buffer.from('bench:0000012345');
      start = process.hrtime.bigint();
      for (let i = 0; i < checkCalls; i++) checkKeyPermission(session.user(), 'write', key);
      const checkNs = Number(process.hrtime.bigint() - start) / checkCalls;
      write(`${users} users: authenticate ${(authenticateNs / 1000).toFixed(2)} µs per call or stream; session.user() + key check ${checkNs.toFixed(0)} ns per operation`);
      auth.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
}

if (isEntryPoint(import.meta.url)) measureAuthCost();
