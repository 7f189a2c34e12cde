import { ResourceLimitError } from '../replication/errors.js';

/** The node-wide jobs that read or copy the whole data set. */
export type AdminJob = 'Backup' | 'Repair' | 'Verify';

/**
 * Runs Backup, Repair and Verify one at a time per node: each reads every record (a backup
 * copies the whole data file), so several at once multiply disk, memory and peer traffic for no
 * gain. A second one is refused at once (RESOURCE_EXHAUSTED naming the one running) rather than
 * queued: these are operator actions, and a queue would hide how long the wait is. Decision
 * recorded in docs/design-notes.md ("Bounded resources").
 */
export class AdminJobs {
  private current: { readonly job: AdminJob; readonly startedAtMs: number } | undefined;

  constructor(private readonly nodeId: string) {}

  async run<T>(job: AdminJob, work: () => Promise<T>): Promise<T> {
    const busy = this.current;
    if (busy !== undefined) {
      const seconds = Math.round((Date.now() - busy.startedAtMs) / 1000);
      throw new ResourceLimitError(
        `${busy.job} is already running on ${this.nodeId} (started ${seconds} s ago): Backup, Repair and Verify run one at a time per node; send the ${job} again when it finishes`,
      );
    }
    this.current = { job, startedAtMs: Date.now() };
    try {
      return await work();
    } finally {
      this.current = undefined;
    }
  }
}
