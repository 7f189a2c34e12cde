#!/usr/bin/env node
/**
 * kvctl: the command-line client of a kvstore cluster, over the SDK (src/client).
 *
 * `runKvctl(argv, io)` is the whole program and answers the exit code; it runs on its own only
 * when this file is the process's entry point, so tests import it and call it in-process.
 */
import { isEntryPoint } from '../common/entry-point.js';
import { readFileSync } from 'node:fs';
import { Option, type Command } from 'commander';
import { KvClient, KvError, Status, consistencyLevels, parseEndpoints, type ConsistencyLevel, type KvTlsOptions } from '../client/index.js';
import { oneLine } from '../client/errors.js';
import { isValidToken } from '../client/bearer-token.js';
import {
  exitCode,
  integerFlag,
  UsageError,
  type KvctlCommand,
  type KvctlContext,
  type KvctlGlobals,
  type KvctlFlagValues,
  type KvctlIo,
  type KvctlOption,
  type KvctlWritable,
} from './kvctl-command.js';
import { kvctlCommands } from './kvctl-commands.js';
import { commandsOnly, handle, newProgram, runProgram } from './cli-program.js';

/** Used when neither --endpoints nor KVSTORE_ENDPOINTS is set: a node's default listen address. */
export const defaultEndpoint = '127.0.0.1:50051';
/** setTimeout's largest delay. */
const timeoutMsMax = 2_147_483_647;

/** Flags of every command, before or after its name. */
const globalOptions: readonly KvctlOption[] = [
  { flags: '--endpoints <host:port,...>', description: `nodes to talk to, in failover order (default: $KVSTORE_ENDPOINTS, else ${defaultEndpoint})` },
  { flags: '--consistency <one|quorum|all>', description: "replicas that must answer put/get/del (default: the node's setting)" },
  { flags: '--timeout <ms>', description: 'deadline of each call, retries included (default 5000; backup 600000; ls: longest wait for each batch of keys)' },
  { flags: '--json', description: 'machine-readable output: one JSON object (ls: one per key and line); bytes appear as "<field>" when valid UTF-8, else as "<field>Base64"' },
  { flags: '--token <token>', description: 'bearer token of the user to act as, for nodes with auth (default: $KVSTORE_TOKEN; prefer the variable: arguments show in ps)' },
  { flags: '--cacert <file>', description: "CA certificate (PEM) of nodes with TLS: talk TLS, trusting it (default: $KVSTORE_CACERT; with only --cert/--key: the system's roots)" },
  { flags: '--cert <file>', description: 'client certificate (PEM), for nodes with tls.clientCaFile (default: $KVSTORE_CERT)' },
  { flags: '--key <file>', description: "the client certificate's key (PEM) (default: $KVSTORE_KEY)" },
];

const exitCodesHelp = [
  'Exit codes:',
  '  0  ok',
  '  1  key not found (get)',
  '  2  usage error (unknown command or flag, missing or invalid argument)',
  '  3  server or cluster error; the message starts with the gRPC status, e.g. "UNAVAILABLE: ..."',
  '  4  cannot connect to any endpoint',
  '  5  verify: the replicas of at least one range differ',
].join('\n');

function addOptions(command: Command, options: readonly KvctlOption[]): void {
  for (const { flags, description, group } of options) {
    const option = new Option(flags, description);
    if (group !== undefined) option.helpGroup(group);
    command.addOption(option);
  }
}

/** Runs one command: its positional arguments, the global flags' values, its own flags. */
export type KvctlRunner = (command: KvctlCommand, args: readonly string[], globals: Record<string, unknown>, flags: KvctlFlagValues) => Promise<number>;

/** The kvctl program: one subcommand per entry of `commands`, each run by `run`. */
export function kvctlProgram(io: Pick<KvctlIo, 'stdout' | 'stderr'>, run: KvctlRunner, commands: readonly KvctlCommand[] = kvctlCommands): Command {
  const program = newProgram('kvctl', io)
    .description('Reads and writes a kvstore cluster over its gRPC API. Global options go before or after the command.')
    // Every command's help lists the global options too, and the exit codes.
    .configureHelp({ showGlobalOptions: true })
    .addHelpText('afterAll', `\n${exitCodesHelp}\n`);
  addOptions(program, globalOptions);
  for (const command of commands) {
    const sub = program
      .command(command.name)
      .summary(command.summary)
      .description(command.help === undefined ? command.summary : `${command.summary}\n\n${command.help}`);
    if (command.arguments !== undefined) sub.arguments(command.arguments);
    addOptions(sub, command.options ?? []);
    handle(sub, () => {
      // Own flags by long name: --start-after is 'start-after'; --preload and --no-preload are both 'preload'.
      const flags: KvctlFlagValues = {};
      for (const option of sub.options) {
        flags[option.long!.replace(option.negate ? /^--no-/ : /^--/, '')] = sub.getOptionValue(option.attributeName()) as string | boolean | undefined;
      }
      return run(command, sub.args, program.opts(), flags);
    });
  }
  return commandsOnly(program);
}

function processIo(): KvctlIo {
  return {
    stdout: process.stdout,
    stderr: process.stderr,
    // Touch process.stdin only when a command reads it (put <key> -).
    stdin: { [Symbol.asyncIterator]: () => process.stdin[Symbol.asyncIterator]() },
    env: process.env,
  };
}

function globalsFrom(values: Record<string, unknown>, io: KvctlIo): KvctlGlobals {
  const endpointsValue = typeof values['endpoints'] === 'string' ? values['endpoints'] : undefined;
  const fromEnv = io.env?.['KVSTORE_ENDPOINTS'];
  const source = endpointsValue ?? (fromEnv === undefined || fromEnv.trim() === '' ? defaultEndpoint : fromEnv);
  let endpoints: string[];
  try {
    endpoints = parseEndpoints(source);
  } catch (error) {
    const origin = endpointsValue !== undefined ? '--endpoints' : 'KVSTORE_ENDPOINTS';
    const message = error instanceof Error ? error.message.replace(/^KvClient: /, '') : String(error);
    throw new UsageError(`${origin}: ${message}`);
  }
  const globals: KvctlGlobals = { endpoints, json: values['json'] === true };
  const consistency = values['consistency'];
  if (typeof consistency === 'string') {
    if (!(consistencyLevels as readonly string[]).includes(consistency)) {
      throw new UsageError(`--consistency must be one of ${consistencyLevels.join(', ')}, got "${consistency}"`);
    }
    globals.consistency = consistency as ConsistencyLevel;
  }
  const timeout = values['timeout'];
  if (typeof timeout === 'string') globals.timeoutMs = integerFlag('--timeout', timeout, 1, timeoutMsMax);
  const tls = tlsFrom(values, io);
  if (tls !== undefined) globals.tls = tls;
  const tokenFlag = typeof values['token'] === 'string' ? values['token'] : undefined;
  const tokenEnv = io.env?.['KVSTORE_TOKEN'];
  const token = tokenFlag ?? (tokenEnv === undefined || tokenEnv.trim() === '' ? undefined : tokenEnv.trim());
  if (token !== undefined) {
    if (!isValidToken(token)) throw new UsageError(`${tokenFlag !== undefined ? '--token' : 'KVSTORE_TOKEN'} must be printable ASCII without spaces (as kvstore auth token prints it)`);
    globals.token = token;
  }
  return globals;
}

/** TLS material named by --cacert/--cert/--key or their variables (files read now); undefined: plaintext. */
function tlsFrom(values: Record<string, unknown>, io: KvctlIo): KvTlsOptions | undefined {
  const file = (flag: 'cacert' | 'cert' | 'key', variable: string): { origin: string; pem: Buffer } | undefined => {
    const fromFlag = typeof values[flag] === 'string' ? (values[flag] as string) : undefined;
    const fromEnv = io.env?.[variable];
    const path = fromFlag ?? (fromEnv === undefined || fromEnv.trim() === '' ? undefined : fromEnv.trim());
    if (path === undefined) return undefined;
    const origin = fromFlag !== undefined ? `--${flag}` : variable;
    try {
      return { origin, pem: readFileSync(path) };
    } catch (error) {
      throw new UsageError(`${origin} ${path}: ${error instanceof Error ? error.message : String(error)}`);
    }
  };
  const ca = file('cacert', 'KVSTORE_CACERT');
  const cert = file('cert', 'KVSTORE_CERT');
  const key = file('key', 'KVSTORE_KEY');
  if ((cert === undefined) !== (key === undefined)) throw new UsageError(`${(cert ?? key)!.origin} needs ${cert === undefined ? '--cert (or KVSTORE_CERT)' : '--key (or KVSTORE_KEY)'} too: a client certificate goes with its key`);
  if (ca === undefined && cert === undefined) return undefined;
  return { ...(ca === undefined ? {} : { ca: ca.pem }), ...(cert === undefined ? {} : { cert: cert.pem, key: key!.pem }) };
}

function writer(stream: KvctlWritable): (chunk: string | Uint8Array) => Promise<void> {
  return (chunk) => {
    if (stream.write(chunk) || stream.once === undefined) return Promise.resolve();
    return new Promise((resolve) => stream.once?.('drain', resolve));
  };
}

/** What the user can do about a server-side error, or ''. */
function serverErrorHint(error: KvError): string {
  const write = error.operation === 'put' || error.operation === 'delete';
  const uncertain = error.code === Status.UNAVAILABLE || error.code === Status.DEADLINE_EXCEEDED;
  if (write && uncertain && !error.details.includes('may still be applied')) {
    return ' (the write may still be applied, it is not rolled back; repeat it if it must be visible)';
  }
  const seeStatus = error.operation === 'status' ? '' : ", see 'kvctl status'";
  if (error.code === Status.UNAUTHENTICATED) return ' (give the token of a user in the node\'s users file: --token or KVSTORE_TOKEN)';
  if (error.code === Status.PERMISSION_DENIED) return ' (a role of that user in the users file must grant it)';
  if (error.code === Status.UNAVAILABLE) return ` (too few replicas reachable?${seeStatus})`;
  if (error.code === Status.DEADLINE_EXCEEDED) return ` (raise --timeout${seeStatus})`;
  return '';
}

/** Prints one actionable line for `error` and answers the exit code; usage errors are thrown on, to be reported with the usage. */
function report(error: unknown, io: KvctlIo): number {
  const say = (line: string): void => {
    io.stderr.write(`kvctl: ${oneLine(line)}\n`);
  };
  if (error instanceof UsageError) throw error;
  if (KvError.isKvError(error)) {
    // Rejected by the SDK before any call (e.g. empty key): a command-line problem.
    if (error.code === Status.INVALID_ARGUMENT && error.endpoint === '') throw new UsageError(error.details);
    if (error.unreachable) {
      // A TLS handshake that fails looks the same as a refused connection from here.
      say(`${error.message} (are the nodes running? check --endpoints / KVSTORE_ENDPOINTS; a node with TLS needs --cacert, and --cert/--key if it asks for a client certificate)`);
      return exitCode.unreachable;
    }
    const hint = serverErrorHint(error);
    say(`${error.message}${hint}`);
    return exitCode.server;
  }
  say(`unexpected error: ${error instanceof Error ? error.message : String(error)}`);
  return exitCode.server;
}

/**
 * Runs kvctl with `argv` (the arguments after the program name) and answers its exit code.
 * Never throws and never exits the process: errors are printed to `io.stderr`.
 *
 * @example
 * ```ts
 * const code = await runKvctl(['--endpoints', '127.0.0.1:50051', 'get', 'k']);
 * ```
 */
export async function runKvctl(argv: string[], io: KvctlIo = processIo()): Promise<number> {
  try {
    return await runProgram(kvctlProgram(io, (command, args, values, flags) => runCommand(command, args, values, flags, io)), argv);
  } catch (error) {
    return report(error, io);
  }
}

/** Runs `command` against the cluster; answers its exit code. */
async function runCommand(command: KvctlCommand, args: readonly string[], values: Record<string, unknown>, flags: KvctlFlagValues, io: KvctlIo): Promise<number> {
  const clients: KvClient[] = [];
  try {
    const globals = globalsFrom(values, io);
    const context: KvctlContext = {
      globals,
      io,
      args,
      flags,
      write: writer(io.stdout),
      client(overrides = {}) {
        const deadlineMs = globals.timeoutMs ?? command.defaultTimeoutMs;
        const client = new KvClient({
          endpoints: globals.endpoints,
          ...(globals.consistency === undefined ? {} : { consistency: globals.consistency }),
          ...(deadlineMs === undefined ? {} : { deadlineMs }),
          ...(globals.tls === undefined ? {} : { tls: globals.tls }),
          ...(globals.token === undefined ? {} : { token: globals.token }),
          ...overrides,
        });
        clients.push(client);
        return client;
      },
    };
    return await command.run(context);
  } catch (error) {
    return report(error, io);
  } finally {
    for (const client of clients) client.close();
  }
}


if (isEntryPoint(import.meta.url)) {
  // `kvctl ls | head`: the reader went away; that is not an error.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(exitCode.ok);
    process.stderr.write(`kvctl: cannot write to stdout: ${error.message}\n`);
    process.exit(exitCode.server);
  });
  void runKvctl(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
