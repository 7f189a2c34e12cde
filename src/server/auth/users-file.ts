import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';

/**
 * The users file (`auth.usersFile`): roles with permissions on key prefixes, and users with
 * roles and the SHA-256 of their bearer token. Parsed and validated here (zod), nowhere else.
 *
 * ```yaml
 * roles:
 *   app-reader: { read: ["app/"] }
 *   operator:   { read: [""], write: [""], admin: true }
 * users:
 *   alice: { roles: [app-reader], tokenSha256: 3b1f...64 hex digits }
 * ```
 *
 * A prefix is UTF-8 text matched against the start of a key's bytes; "" matches every key.
 */

/** Most roles, and most users, one file may define: the file is read into memory and scanned per login. */
export const usersFileEntriesMax = 10_000;
/** Most prefixes one role may list under `read` or `write`: each check scans them. */
export const rolePrefixesMax = 1024;
/** Longest prefix, in bytes: a key is at most 1974 bytes (limits.maxKeyBytes' ceiling). */
export const prefixBytesMax = 2048;
/** Random bytes in a token made by `kvstore auth token` (256 bits). */
export const tokenRandomBytes = 32;
/** What every token made by `kvstore auth token` starts with, so a leaked one is recognisable. */
export const tokenPrefix = 'kvs_';

/** A user or role name: also what a client certificate's subject CN must equal to name the user. */
export const namePattern = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$/;
export const namePatternText = 'must be 1-128 characters of A-Z a-z 0-9 . _ @ - starting with a letter or digit';
const nameSchema = z.string().regex(namePattern, namePatternText);

const prefixesSchema = z
  .array(z.string().refine((p) => Buffer.byteLength(p) <= prefixBytesMax, `a prefix must be at most ${prefixBytesMax} bytes`))
  .max(rolePrefixesMax, `at most ${rolePrefixesMax} prefixes`)
  .default([]);

const roleSchema = z.strictObject({
  /** Key prefixes the role may Get and ListKeys under. */
  read: prefixesSchema,
  /** Key prefixes the role may Put and Delete under. */
  write: prefixesSchema,
  /** Backup, Repair, Verify, ChangeMembership and the full Status (paths, peer addresses, backlogs); also /metrics. */
  admin: z.boolean().default(false),
  /** May scrape /metrics (admin implies it). */
  metrics: z.boolean().default(false),
});

const userSchema = z.strictObject({
  roles: z.array(nameSchema).max(rolePrefixesMax).default([]),
  /** Hex SHA-256 of the user's bearer token; absent: the user has no token (certificate only). */
  tokenSha256: z
    .string()
    .regex(/^[0-9a-fA-F]{64}$/, 'must be 64 hex digits: the SHA-256 of the token (`kvstore auth token --user <name>` prints it)')
    .optional(),
});

const usersFileSchema = z
  .strictObject({
    roles: z
      .record(nameSchema, roleSchema)
      .default({})
      .refine((r) => Object.keys(r).length <= usersFileEntriesMax, `at most ${usersFileEntriesMax} roles`),
    users: z
      .record(nameSchema, userSchema)
      .default({})
      .refine((u) => Object.keys(u).length <= usersFileEntriesMax, `at most ${usersFileEntriesMax} users`),
  })
  .superRefine((file, ctx) => {
    const byDigest = new Map<string, string>();
    for (const [name, user] of Object.entries(file.users)) {
      user.roles.forEach((role, i) => {
        if (!Object.hasOwn(file.roles, role)) {
          ctx.addIssue({ code: 'custom', path: ['users', name, 'roles', i], message: `role "${role}" is not defined under roles:` });
        }
      });
      if (user.tokenSha256 !== undefined) {
        const digest = user.tokenSha256.toLowerCase();
        const other = byDigest.get(digest);
        if (other !== undefined) {
          ctx.addIssue({ code: 'custom', path: ['users', name, 'tokenSha256'], message: `is the same as user "${other}"'s: every user needs a token of its own` });
        }
        byDigest.set(digest, name);
      }
    }
  });

/** One user as the authorizer sees it: the union of its roles' permissions. */
export interface User {
  readonly name: string;
  readonly roles: readonly string[];
  /** Key prefixes it may read (Get, ListKeys); an empty Buffer is every key. */
  readonly read: readonly Buffer[];
  /** Key prefixes it may write (Put, Delete). */
  readonly write: readonly Buffer[];
  readonly admin: boolean;
  /** May scrape /metrics (a role with `metrics: true` or `admin: true`). */
  readonly metrics: boolean;
}

/** A users file that failed to read or validate; the message names the file and every bad path. */
export class UsersFileError extends Error {
  override name = 'UsersFileError';
}

/** The SHA-256 of a bearer token, as stored in the users file (`tokenSha256`, hex). */
export function tokenDigest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

/** A new random bearer token (`kvs_` and 43 base64url characters: 256 random bits). */
export function newToken(): string {
  return tokenPrefix + randomBytes(tokenRandomBytes).toString('base64url');
}

/** The users of one version of the users file, looked up by token digest or by name. */
export class UsersDirectory {
  private readonly byName: ReadonlyMap<string, User>;
  /** Users with a token, by the hex of its SHA-256. */
  private readonly byDigest: ReadonlyMap<string, { readonly digest: Buffer; readonly user: User }>;

  constructor(users: readonly User[], digests: readonly { readonly digest: Buffer; readonly user: User }[]) {
    this.byName = new Map(users.map((u) => [u.name, u]));
    this.byDigest = new Map(digests.map((d) => [d.digest.toString('hex'), d]));
  }

  get size(): number {
    return this.byName.size;
  }

  /**
   * The user whose token has this SHA-256 digest: found by a map lookup on the digest, then
   * compared with `timingSafeEqual`. The lookup's timing can depend only on the digest, the
   * SHA-256 of what the caller sent, never on the stored secrets' bytes against the caller's:
   * learning how a guess's digest relates to a stored digest does not help find a token (SHA-256
   * is preimage resistant), as with a database index over hashed API tokens. A scan comparing
   * every digest cost 66 µs per call with 1,000 users (BENCHMARKS.md); this costs the same for any
   * number.
   */
  byTokenDigest(digest: Buffer): User | undefined {
    const entry = this.byDigest.get(digest.toString('hex'));
    return entry !== undefined && entry.digest.length === digest.length && timingSafeEqual(entry.digest, digest) ? entry.user : undefined;
  }

  /** The user with this name (a client certificate's subject CN), if any. */
  byUserName(name: string): User | undefined {
    return this.byName.get(name);
  }
}

/** Parses and validates the text of a users file; `source` names it in error messages. */
export function parseUsersFile(text: string, source: string): UsersDirectory {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new UsersFileError(`users file ${source} is not valid YAML: ${(err as Error).message}`);
  }
  const result = usersFileSchema.safeParse(raw ?? {});
  if (!result.success) {
    const issues = result.error.issues.map((issue) => `  ${issue.path.length > 0 ? issue.path.map(String).join('.') : '(top level)'}: ${issue.message}`);
    throw new UsersFileError(`invalid users file ${source}:\n${issues.join('\n')}`);
  }
  const { roles, users } = result.data;
  const list: User[] = [];
  const digests: { digest: Buffer; user: User }[] = [];
  for (const [name, entry] of Object.entries(users)) {
    const granted = entry.roles.map((r) => roles[r]!);
    const user: User = {
      name,
      roles: entry.roles,
      read: uniquePrefixes(granted.flatMap((r) => r.read)),
      write: uniquePrefixes(granted.flatMap((r) => r.write)),
      admin: granted.some((r) => r.admin),
      metrics: granted.some((r) => r.admin || r.metrics),
    };
    list.push(user);
    if (entry.tokenSha256 !== undefined) digests.push({ digest: Buffer.from(entry.tokenSha256, 'hex'), user });
  }
  return new UsersDirectory(list, digests);
}

/** Reads and validates a users file. */
export function loadUsersFile(path: string): UsersDirectory {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsersFileError(`cannot read users file ${path}: ${(err as Error).message}`);
  }
  return parseUsersFile(text, path);
}

/** The prefixes as bytes, without duplicates; one that another covers is dropped too. */
function uniquePrefixes(prefixes: readonly string[]): Buffer[] {
  const sorted = [...new Set(prefixes)].map((p) => Buffer.from(p, 'utf8')).sort(Buffer.compare);
  const kept: Buffer[] = [];
  for (const p of sorted) {
    // Sorted bytewise, a covering prefix comes right before the prefixes it covers.
    const last = kept[kept.length - 1];
    if (last !== undefined && startsWith(p, last)) continue;
    kept.push(p);
  }
  return kept;
}

/** Whether `bytes` starts with `prefix`. */
export function startsWith(bytes: Buffer, prefix: Buffer): boolean {
  return prefix.length <= bytes.length && prefix.compare(bytes, 0, prefix.length) === 0;
}
