#!/usr/bin/env node
/**
 * kvctl: the command-line client of a kvstore cluster, over the SDK (src/client).
 *
 * `runKvctl(argv, io)` is the whole program and answers the exit code; it runs on its own only
 * when this file is the process's entry point, so tests import it and call it in-process.
 */
import { isEntryPoint } from '../common/entry-point.js';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { readFileSync } from 'node:fs';
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
  type KvctlIo,
  type KvctlWritable,
} from './kvctl-command.js';
import { kvctlCommands } from './kvctl-commands.js';

/** Used when neither --endpoints nor KVSTORE_ENDPOINTS is set: a node's default listen address. */
export const defaultEndpoint = '127.0.0.1:50051';
/** setTimeout's largest delay. */
const timeoutMsMax = 2_147_483_647;

const globalOptions = {
  endpoints: { type: 'string' },
  consistency: { type: 'string' },
  timeout: { type: 'string' },
  json: { type: 'boolean' },
  cacert: { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  token: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

const exitCodesHelp = [
  'Exit codes:',
  '  0  ok',
  '  1  key not found (get)',
  '  2  usage error (unknown command or flag, missing or invalid argument)',
  '  3  server or cluster error; the message starts with the gRPC status, e.g. "UNAVAILABLE: ..."',
  '  4  cannot connect to any endpoint',
  '  5  verify: the replicas of at least one range differ',
].join('\n');

const globalOptionsHelp = [
  'Global options:',
  '  --endpoints host:port[,host:port...]',
  '                  nodes to talk to, in failover order',
  `                  (default: $KVSTORE_ENDPOINTS, else ${defaultEndpoint})`,
  '  --consistency one|quorum|all',
  "                  replicas that must answer put/get/del (default: the node's setting)",
  '  --timeout <ms>  deadline of each call, retries included (default 5000; backup 600000;',
  '                  ls: longest wait for each batch of keys)',
  '  --json          machine-readable output: one JSON object (ls: one per key and line);',
  '                  bytes appear as "<field>" when valid UTF-8, else as "<field>Base64"',
  '  --token <token>  bearer token of the user to act as, for nodes with auth',
  '                  (default: $KVSTORE_TOKEN; prefer the variable: arguments show in ps)',
  '  --cacert <file> CA certificate (PEM) of nodes with TLS: talk TLS, trusting it',
  '                  (default: $KVSTORE_CACERT; with only --cert/--key: the system\'s roots)',
  '  --cert <file>, --key <file>',
  '                  client certificate and key (PEM), for nodes with tls.clientCaFile',
  '                  (default: $KVSTORE_CERT, $KVSTORE_KEY)',
  '  -h, --help      show help (kvctl <command> --help: help on one command)',
].join('\n');

/** `kvctl --help`. */
export function kvctlUsage(commands: readonly KvctlCommand[] = kvctlCommands): string {
  const width = 26;
  const lines = commands.flatMap((command) => {
    const synopsis = `  ${command.name}${command.usage === '' ? '' : ` ${command.usage}`}`;
    return synopsis.length < width
      ? [`${synopsis.padEnd(width)}${command.summary}`]
      : [synopsis, `${' '.repeat(width)}${command.summary}`];
  });
  return [
    'Usage: kvctl [global options] <command> [arguments]',
    '',
    'Reads and writes a kvstore cluster over its gRPC API.',
    '',
    'Commands:',
    ...lines,
    '',
    globalOptionsHelp,
    '',
    exitCodesHelp,
    '',
  ].join('\n');
}

/** `kvctl <command> --help`. */
export function commandUsage(command: KvctlCommand): string {
  return [
    `Usage: kvctl [global options] ${command.name}${command.usage === '' ? '' : ` ${command.usage}`}`,
    '',
    command.summary,
    ...(command.help === undefined ? [] : ['', command.help]),
    '',
    globalOptionsHelp,
    '',
    exitCodesHelp,
    '',
  ].join('\n');
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

/** Runs node:util parseArgs, turning its errors into usage errors. */
function parse<T extends ParseArgsConfig>(config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
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

/** Prints one actionable line for `error` and answers the exit code. */
function report(error: unknown, io: KvctlIo, commandName: string | undefined): number {
  const say = (line: string): void => {
    io.stderr.write(`kvctl: ${oneLine(line)}\n`);
  };
  const helpHint = `run 'kvctl ${commandName === undefined ? '' : `${commandName} `}--help' for usage`;
  if (error instanceof UsageError) {
    say(`${error.message} (${helpHint})`);
    return exitCode.usage;
  }
  if (KvError.isKvError(error)) {
    // Rejected by the SDK before any call (e.g. empty key): a command-line problem.
    if (error.code === Status.INVALID_ARGUMENT && error.endpoint === '') {
      say(`${error.details} (${helpHint})`);
      return exitCode.usage;
    }
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
  let commandName: string | undefined;
  try {
    // First pass, global flags only: find the command name (the first positional argument).
    const first = parse({ args: argv, options: globalOptions, strict: false, allowPositionals: true, tokens: true });
    commandName = first.tokens.find((token) => token.kind === 'positional')?.value;
    if (commandName === undefined) {
      if (first.values.help === true) {
        io.stdout.write(kvctlUsage());
        return exitCode.ok;
      }
      throw new UsageError('no command given');
    }
    if (commandName === 'help') {
      const topic = first.positionals[1];
      const command = kvctlCommands.find((candidate) => candidate.name === topic);
      if (topic !== undefined && command === undefined) throw new UsageError(`unknown command "${topic}"`);
      io.stdout.write(command === undefined ? kvctlUsage() : commandUsage(command));
      return exitCode.ok;
    }
    const command = kvctlCommands.find((candidate) => candidate.name === commandName);
    if (command === undefined) {
      const name = commandName;
      commandName = undefined;
      throw new UsageError(`unknown command "${name}"; commands: ${kvctlCommands.map((c) => c.name).join(', ')}`);
    }

    // Second pass, strict: global flags and the command's own.
    const parsed = parse({
      args: argv,
      options: { ...globalOptions, ...command.options },
      strict: true,
      allowPositionals: true,
    });
    if (parsed.values.help === true) {
      io.stdout.write(commandUsage(command));
      return exitCode.ok;
    }
    const args = parsed.positionals.slice(1);
    if (command.positionals !== undefined && args.length !== command.positionals.length) {
      const expected = command.positionals.length === 0 ? 'no arguments' : command.positionals.map((name) => `<${name}>`).join(' ');
      throw new UsageError(`${command.name} expects ${expected}, got ${args.length} argument${args.length === 1 ? '' : 's'}`);
    }
    const globals = globalsFrom(parsed.values, io);
    const flags = Object.fromEntries(Object.entries(parsed.values).filter(([name]) => !Object.hasOwn(globalOptions, name)));

    const clients: KvClient[] = [];
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
    try {
      return await command.run(context);
    } finally {
      for (const client of clients) client.close();
    }
  } catch (error) {
    return report(error, io, commandName);
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
