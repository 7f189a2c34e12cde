/**
 * Reloading without a restart: on SIGHUP every registered listener runs (certificates, the users
 * file). One process-wide handler, installed by the first listener, so the signal's default
 * action (ending the process) is replaced only in a process that can reload something.
 */
const listeners = new Set<() => void>();
let installed = false;

/** Runs `listener` on every SIGHUP; returns a function that unregisters it. */
export function onReload(listener: () => void): () => void {
  if (!installed) {
    installed = true;
    process.on('SIGHUP', () => {
      for (const l of [...listeners]) l();
    });
  }
  listeners.add(listener);
  return () => listeners.delete(listener);
}
