/**
 * The kvctl command table: every command, in the order `kvctl --help` lists them.
 *
 * To add a command (bench, verify, repair, ...): implement a {@link KvctlCommand} in its own
 * kvctl-<name>.ts file and append it here; the dispatcher, `--help` and flag parsing pick it up.
 */
import { backupCommand, statusCommand } from './kvctl-admin.js';
import { benchCommand } from './kvctl-bench.js';
import type { KvctlCommand } from './kvctl-command.js';
import { memberCommand } from './kvctl-member.js';
import { delCommand, getCommand, lsCommand, putCommand } from './kvctl-kv.js';
import { repairCommand } from './kvctl-repair.js';
import { verifyCommand } from './kvctl-verify.js';

export const kvctlCommands: readonly KvctlCommand[] = [
  putCommand,
  getCommand,
  delCommand,
  lsCommand,
  backupCommand,
  statusCommand,
  memberCommand,
  verifyCommand,
  repairCommand,
  benchCommand,
];
