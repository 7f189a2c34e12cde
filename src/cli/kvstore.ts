#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { ConfigError, loadConfigFile, resolveConfig } from '../config/load-config.js';
import { DataDirLockedError } from '../storage/data-dir-lock.js';
import { DataDirMismatchError } from '../storage/repository.js';
import { KvNode } from '../server/node.js';
import { installProcessPolicy } from '../common/process-policy.js';
import { isEntryPoint } from '../common/entry-point.js';
import { runRestore } from './restore.js';
import { runCerts } from './certs.js';
import { runAuth } from './auth-token.js';
import { UsersFileError } from '../server/auth/users-file.js';
import { TlsConfigError } from '../server/tls-credentials.js';

const usage = `Usage:
  kvstore [--config node.yaml] [--log-level info]   run a node (no config: one node on defaults)
          [--allow-stale-start]                      start on data restored from a backup older than
                                                   tombstones.graceSeconds (only if nothing was purged since)
  kvstore restore --from <backup dir> --config node.yaml [--force]
                                                   restore a stopped node's data from a backup
  kvstore certs --out <dir> --nodes n1,n2,n3 [--hosts h,...]
                                                   write a development CA and node/admin certificates (openssl)
  kvstore auth token --user <name> [--roles r1,r2]  print a new bearer token and its users-file line

Exit codes: 0 clean stop, 1 runtime failure, 2 bad arguments or config (certificates, users file included), 3 data dir refused.`;

/** Runs the `kvstore` command; resolves with the process exit code. */
export async function runKvstore(argv: string[]): Promise<number> {
  if (argv[0] === 'restore') return runRestore(argv.slice(1));
  if (argv[0] === 'certs') return runCerts(argv.slice(1));
  if (argv[0] === 'auth') return runAuth(argv.slice(1));
  let args;
  try {
    args = parseArgs({
      args: argv,
      options: { config: { type: 'string', short: 'c' }, 'log-level': { type: 'string' }, 'allow-stale-start': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (err) {
    process.stderr.write(`kvstore: ${(err as Error).message}\n${usage}\n`);
    return 2;
  }
  if (args.help) {
    process.stdout.write(`${usage}\n`);
    return 0;
  }
  let config;
  try {
    config = args.config !== undefined ? loadConfigFile(args.config) : resolveConfig({}, 'default config');
    if (args['log-level'] !== undefined) config = resolveConfig({ ...stripDerived(config), logLevel: args['log-level'] }, '--log-level');
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
    node = await KvNode.start(config, logger, args['allow-stale-start'] === true);
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
