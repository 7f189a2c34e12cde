import type { Logger } from 'pino';
import { onReload } from '../../common/reload-signal.js';
import { UnauthenticatedError } from '../../replication/errors.js';
import { loadUsersFile, tokenDigest, type User, type UsersDirectory } from './users-file.js';

/**
 * Who a caller is, from the current users file. Holds the file's current version, re-read on
 * SIGHUP (a bad file keeps the previous version and logs an error), and turns a call's
 * credentials into an {@link AuthSession}:
 *
 * - `authorization: Bearer <token>` metadata: the user whose `tokenSha256` is the token's SHA-256;
 * - else, when the transport verified a client certificate (`tls.clientCaFile`), the user whose
 *   name is the certificate's subject CN (`certificateCn`, given by the caller).
 *
 * A session re-resolves its user whenever the file changed since, so a token removed by a reload
 * stops working at once, also on an OperationStream opened before the reload.
 */
export class Authenticator {
  private directory: UsersDirectory;
  /** Bumped by every successful reload; sessions compare it with the version they resolved at. */
  private version = 0;
  private readonly unregister: () => void;

  constructor(
    readonly usersFile: string,
    private readonly logger: Logger,
  ) {
    this.directory = loadUsersFile(usersFile);
    this.unregister = onReload(() => this.reload());
  }

  /** Users in the current version of the file. */
  get userCount(): number {
    return this.directory.size;
  }

  /** Re-reads the users file; answers whether the new version is in force (else the old one stays). */
  reload(): boolean {
    try {
      this.directory = loadUsersFile(this.usersFile);
      this.version++;
      this.logger.info({ usersFile: this.usersFile, users: this.directory.size }, `users file reloaded: ${this.directory.size} users`);
      return true;
    } catch (err) {
      this.logger.error({ usersFile: this.usersFile, err: (err as Error).message }, 'users file reload failed: keeping the previous version');
      return false;
    }
  }

  /**
   * The session of a call with these credentials.
   *
   * @param authorization the `authorization` metadata value, if sent
   * @param certificateCn the subject CN of the client certificate the TLS layer verified, if any
   * @throws UnauthenticatedError when no credentials were sent or they name no user
   */
  authenticate(authorization: string | undefined, certificateCn?: string): AuthSession {
    if (authorization !== undefined) {
      const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(authorization);
      if (match === null) throw new UnauthenticatedError('malformed authorization metadata: send "authorization: Bearer <token>"');
      const session = new AuthSession(this, { digest: tokenDigest(match[1]!) });
      session.user();
      return session;
    }
    if (certificateCn !== undefined && certificateCn !== '') {
      const session = new AuthSession(this, { certificateCn });
      session.user();
      return session;
    }
    throw new UnauthenticatedError('no credentials: this node requires authentication (send "authorization: Bearer <token>" metadata; kvctl --token or KVSTORE_TOKEN)');
  }

  /** The user the credentials name in the current file version (throws if none). */
  resolve(credentials: Credentials): { readonly user: User; readonly version: number } {
    const user = credentials.digest !== undefined ? this.directory.byTokenDigest(credentials.digest) : this.directory.byUserName(credentials.certificateCn);
    if (user === undefined) {
      throw new UnauthenticatedError(
        credentials.digest !== undefined
          ? 'invalid token: no user in the users file has this token (wrong, or removed)'
          : `client certificate CN "${credentials.certificateCn}" names no user in the users file`,
      );
    }
    return { user, version: this.version };
  }

  /** The current file version (see {@link AuthSession}). */
  get currentVersion(): number {
    return this.version;
  }

  /** Stops following SIGHUP. */
  close(): void {
    this.unregister();
  }
}

type Credentials = { readonly digest: Buffer; readonly certificateCn?: undefined } | { readonly digest?: undefined; readonly certificateCn: string };

/** One call's authenticated caller. */
export class AuthSession {
  private resolved: { readonly user: User; readonly version: number } | undefined;

  constructor(
    private readonly authenticator: Authenticator,
    private readonly credentials: Credentials,
  ) {}

  /**
   * The caller, as the current users file describes it (roles changed by a reload apply).
   *
   * @throws UnauthenticatedError if a reload removed the credentials since the call began
   */
  user(): User {
    const resolved = this.resolved;
    if (resolved !== undefined && resolved.version === this.authenticator.currentVersion) return resolved.user;
    this.resolved = undefined;
    this.resolved = this.authenticator.resolve(this.credentials);
    return this.resolved.user;
  }
}
