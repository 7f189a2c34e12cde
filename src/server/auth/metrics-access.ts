import { UnauthenticatedError } from '../../replication/errors.js';
import type { Authenticator } from './authenticator.js';

/** Whether a scrape may read /metrics: 200, or the HTTP status and reason to answer instead. */
export type MetricsDecision = { readonly status: 200 } | { readonly status: 401 | 403; readonly message: string };

/**
 * The /metrics check with `auth.metrics: token`: `authorization: Bearer <token>` of a user with a
 * role that grants `metrics` (or `admin`). No or an unknown token: 401; a user without it: 403.
 * Prometheus sends it with `authorization: { credentials_file: ... }` in its scrape config.
 */
export function metricsAccess(authenticator: Authenticator): (authorization: string | undefined) => MetricsDecision {
  return (authorization) => {
    let user;
    try {
      user = authenticator.authenticate(authorization).user();
    } catch (err) {
      if (err instanceof UnauthenticatedError) return { status: 401, message: err.message };
      throw err;
    }
    if (!user.metrics) return { status: 403, message: `permission denied: user "${user.name}" lacks metrics permission (a role with metrics: true or admin: true)` };
    return { status: 200 };
  };
}
