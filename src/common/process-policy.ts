import type { Logger } from 'pino';

/**
 * What ends a node, decided once for the process (installed by the `kvstore` command):
 * - a fault (a pause, a partition, a late request, a full disk) never does: it is a status code
 *   and a log line where it happens;
 * - a promise rejection nobody handled is a bug, but not a broken invariant: it is logged with
 *   its stack and counted (`kvstore_unhandled_rejections_total`), and the node keeps serving;
 * - a broken invariant ends the node on purpose: `assertInvariant` throws InvariantViolation,
 *   and an uncaught exception (which may have left in-memory state half-updated) is treated the
 *   same way. Both log one fatal line saying what broke and exit with invariantExitCode.
 */

/** Exit code of a node that ended itself because an invariant broke (EX_SOFTWARE). */
export const invariantExitCode = 70;

/** Rejections no handler took, since start. */
export const unhandledRejections = { count: 0 };

/** Something that must never happen did. */
export class InvariantViolation extends Error {
  override name = 'InvariantViolation';
}

/** Throws InvariantViolation (which ends the node) unless `condition` holds. */
export function assertInvariant(condition: boolean, what: () => string): asserts condition {
  if (!condition) throw new InvariantViolation(what());
}

/** Installs the policy above on this process. */
export function installProcessPolicy(logger: Logger): void {
  process.on('unhandledRejection', (reason) => {
    unhandledRejections.count++;
    logger.error({ err: reason }, 'unhandled promise rejection (a bug: logged and counted; the node keeps serving)');
  });
  process.on('uncaughtException', (err) => {
    const what = err instanceof InvariantViolation ? `invariant broken: ${err.message}` : `uncaught exception, in-memory state may be inconsistent: ${err.message}`;
    logger.fatal({ err }, `${what}; ending the node (exit ${invariantExitCode}); its data on disk is intact`);
    logger.flush?.();
    process.exit(invariantExitCode);
  });
}
