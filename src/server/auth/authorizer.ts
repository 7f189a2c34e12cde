import { PermissionDeniedError } from '../../replication/errors.js';
import { startsWith, type User } from './users-file.js';

/**
 * The permission checks: pure functions of a user (the union of its roles) and what a request
 * touches. Each throws PermissionDeniedError with a message naming the user, the permission and
 * the key (or prefix, or operation); they never do I/O.
 *
 * - `read` on a key: Get. `write` on a key: Put, Delete. Each operation of a Batch or of an
 *   OperationStream is checked on its own key.
 * - ListKeys of a prefix: allowed only if the whole listing is readable, i.e. the requested
 *   prefix starts with one of the user's read prefixes. A listing reaching outside them is
 *   refused, never silently cut down (as etcd refuses a range it does not fully cover).
 * - `admin`: Backup, Repair, Verify, ChangeMembership and the full Status.
 */

export type KeyPermission = 'read' | 'write';

/** Most bytes of a key quoted in a denial message. */
const quotedKeyBytesMax = 128;

/** Whether `user` may `permission` the key. */
export function mayAccessKey(user: User, permission: KeyPermission, key: Buffer): boolean {
  const prefixes = permission === 'read' ? user.read : user.write;
  for (const prefix of prefixes) if (startsWith(key, prefix)) return true;
  return false;
}

/** Throws unless `user` may `permission` (read: Get; write: Put, Delete) the key. */
export function checkKeyPermission(user: User, permission: KeyPermission, key: Buffer): void {
  if (mayAccessKey(user, permission, key)) return;
  throw new PermissionDeniedError(`permission denied: user "${user.name}" lacks ${permission} permission on key ${quoteKey(key)} (${describeGrants(user, permission)})`);
}

/** Throws unless every key under `prefix` is readable by `user` (ListKeys). */
export function checkListPermission(user: User, prefix: Buffer): void {
  if (mayAccessKey(user, 'read', prefix)) return;
  throw new PermissionDeniedError(
    `permission denied: user "${user.name}" lacks read permission on key prefix ${quoteKey(prefix)}: a listing must stay within a readable prefix (${describeGrants(user, 'read')})`,
  );
}

/** Throws unless `user` has admin (what: the RPC, e.g. "Backup"). */
export function checkAdmin(user: User, what: string): void {
  if (user.admin) return;
  throw new PermissionDeniedError(`permission denied: user "${user.name}" lacks admin permission, which ${what} needs`);
}

/** The key as a person reads it: JSON-quoted UTF-8 if it is printable text, else hex. Truncated. */
export function quoteKey(key: Buffer): string {
  const shown = key.length > quotedKeyBytesMax ? key.subarray(0, quotedKeyBytesMax) : key;
  const more = key.length > quotedKeyBytesMax ? `... (${key.length} bytes)` : '';
  const text = shown.toString('utf8');
  // eslint-disable-next-line no-control-regex
  if (Buffer.from(text, 'utf8').equals(shown) && !/[\u0000-\u001f\u007f]/.test(text)) return `${JSON.stringify(text)}${more}`;
  return `0x${shown.toString('hex')}${more}`;
}

function describeGrants(user: User, permission: KeyPermission): string {
  const prefixes = permission === 'read' ? user.read : user.write;
  if (prefixes.length === 0) return `its roles [${user.roles.join(', ')}] grant no ${permission} prefix`;
  const shown = prefixes.slice(0, 8).map(quoteKey).join(', ');
  return `it may ${permission} keys starting with ${shown}${prefixes.length > 8 ? ', ...' : ''}`;
}
