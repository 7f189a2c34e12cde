#!/usr/bin/env node
import type { Command } from 'commander';
import { pino } from 'pino';
import { ConfigError, loadConfigFile, resolveConfig } from '../config/load-config.js';
import { DataDirLockedError } from '../storage/data-dir-lock.js';
import { DataDirMismatchError } from '../storage/repository.js';
import { KvNode } from '../server/node.js';
import { installProcessPolicy } from '../common/process-policy.js';
import { isEntryPoint } from '../common/entry-point.js';
import { addRestoreCommand } from './restore.js';
import { addCertsCommand } from './certs.js';
import { addAuthCommand } from './auth-token.js';
import { commandsOnly, newProgram, runProgram, usageError, type CliStreams } from './cli-program.js';
import { UsersFileError } from '../server/auth/users-file.js';
import { TlsConfigError } from '../server/tls-credentials.js';

/** The `kvstore` program: run a node, or one of its commands (restore, certs, auth token). */
export function kvstoreProgram(streams: CliStreams = process): Command {
  const program = newProgram('kvstore', streams)
    .description('Runs a kvstore node: from --config, else one node on defaults (127.0.0.1:50051, data in ./data).')
    .option('-c, --config <file>', "the node's config file (node.yaml)")
    .option('--log-level <level>', "log level, overriding the config's logLevel (trace, debug, info, warn, error, fatal)")
    .option('--allow-stale-start', 'start on data restored from a backup older than tombstones.graceSeconds (only if nothing was purged since)')
    // The node's flags go before a command and are the node's: `kvstore restore --config` is restore's.
    .enablePositionalOptions()
    .addHelpText('after', '\nExit codes: 0 clean stop, 1 runtime failure, 2 bad arguments or config (certificates, users file\nincluded), 3 data dir refused.');
  addRestoreCommand(program);
  addCertsCommand(program);
  addAuthCommand(program);
  program.hook('preSubcommand', (root, sub) => {
    const given = root.options.filter((option) => root.getOptionValueSource(option.attributeName()) === 'cli');
    if (given.length > 0) usageError(root, `${given.map((option) => option.long).join(', ')} is for running a node, not for '${sub.name()}' (give it after '${sub.name()}' if that takes it)`);
  });
  return commandsOnly(program, runNode);
}

/** Runs the `kvstore` command; resolves with the process exit code. */
export async function runKvstore(argv: string[]): Promise<number> {
  return runProgram(kvstoreProgram(), argv);
}

/** Runs a node until SIGTERM or SIGINT; resolves with the exit code. */
async function runNode(args: { config?: string; logLevel?: string; allowStaleStart?: boolean }): Promise<number> {
  let config;
  try {
    config = args.config !== undefined ? loadConfigFile(args.config) : resolveConfig({}, 'default config');
    if (args.logLevel !== undefined) config = resolveConfig({ ...stripDerived(config), logLevel: args.logLevel }, '--log-level');
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`kvstore: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const logger = pino({ level: config.logLevel, base: { node: config.nodeId } });
  installProcessPolicy(logger);
  let node: KvNode;
  try {
    node = await KvNode.start(config, logger, args.allowStaleStart === true);
  } catch (err) {
    if (err instanceof DataDirLockedError || err instanceof DataDirMismatchError) {
      logger.fatal(err.message);
      process.stderr.write(`kvstore: ${err.message}\n`);
      return 3;
    }
    if (err instanceof UsersFileError || err instanceof TlsConfigError) {
      logger.fatal(err.message);
      process.stderr.write(`kvstore: ${err.message}\n`);
      return 2;
    }
    logger.fatal({ err }, 'node failed to start');
    process.stderr.write(`kvstore: failed to start: ${(err as Error).message}\n`);
    return 1;
  }
  return new Promise<number>((resolve) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) {
        logger.warn({ signal }, 'second signal: exiting now');
        resolve(1);
        return;
      }
      stopping = true;
      logger.info({ signal }, 'stopping: finishing in-flight calls');
      node.stop().then(
        () => {
          logger.info('stopped cleanly');
          resolve(0);
        },
        (err) => {
          logger.error({ err }, 'error while stopping');
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}

/** A resolved config turned back into input (for re-validation with an override). */
function stripDerived(config: ReturnType<typeof resolveConfig>): Record<string, unknown> {
  return { ...config };
}


if (isEntryPoint(import.meta.url)) {
  runKvstore(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      process.stderr.write(`kvstore: ${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
