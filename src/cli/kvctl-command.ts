/**
 * The contract between `kvctl`'s dispatcher (kvctl.ts) and its commands. A command is a plain
 * object: its name, its positional arguments and own flags (commander syntax, with their help)
 * and a handler that answers an exit code. Add a command by writing it in its own kvctl-<name>.ts
 * file and listing it in kvctl-commands.ts.
 */
import type { ConsistencyLevel, KvClient, KvClientOptions, KvTlsOptions } from '../client/index.js';
import { UsageError } from './cli-program.js';

export { UsageError };

/** Exit codes of kvctl (documented in `kvctl --help` and docs/client.md). */
export const exitCode = {
  /** Success. */
  ok: 0,
  /** The key does not exist (get). */
  notFound: 1,
  /** Bad command line: unknown command or flag, missing or invalid argument. */
  usage: 2,
  /** The cluster answered with an error (the message names the gRPC status). */
  server: 3,
  /** No endpoint could be connected to. */
  unreachable: 4,
  /** verify: the replicas of at least one ring range disagree (or could not all be asked). */
  differ: 5,
} as const;

/** Where kvctl writes: process.stdout / process.stderr, or a test's collector. */
export interface KvctlWritable {
  write(chunk: string | Uint8Array): boolean;
  /** Used to wait for 'drain' when write() answers false (streaming output). */
  once?(event: 'drain', listener: () => void): unknown;
  /** Raw values get a trailing newline only on a terminal. */
  isTTY?: boolean;
}

/** The process environment of one kvctl run (tests pass their own). */
export interface KvctlIo {
  stdout: KvctlWritable;
  stderr: KvctlWritable;
  /** Read by `put <key> -`. */
  stdin: AsyncIterable<string | Uint8Array>;
  /** Environment variables (KVSTORE_ENDPOINTS); default process.env. */
  env?: Record<string, string | undefined>;
}

/** Flags every command accepts. */
export interface KvctlGlobals {
  endpoints: string[];
  consistency?: ConsistencyLevel;
  /** --timeout in ms, if given. */
  timeoutMs?: number;
  /** --token, else $KVSTORE_TOKEN: bearer token sent with every call. */
  token?: string;
  json: boolean;
  /** --cacert/--cert/--key (else $KVSTORE_CACERT/_CERT/_KEY), read: TLS towards the nodes. */
  tls?: KvTlsOptions;
}

/** Values of the command's own flags by long name without dashes (`--start-after` is 'start-after'; `--no-x` sets 'x' to false). */
export type KvctlFlagValues = Record<string, string | boolean | undefined>;

/** Everything a command handler gets. */
export interface KvctlContext {
  readonly globals: KvctlGlobals;
  readonly io: KvctlIo;
  /** Positional arguments after the command name. */
  readonly args: readonly string[];
  /** The command's own flags. */
  readonly flags: KvctlFlagValues;
  /**
   * A client for --endpoints/--consistency/--timeout (overridable, e.g. channelsPerEndpoint for
   * a benchmark). The dispatcher closes it after the command.
   */
  client(overrides?: Partial<Omit<KvClientOptions, 'endpoints'>>): KvClient;
  /** Writes to stdout, waiting for 'drain' when the pipe is full. */
  write(chunk: string | Uint8Array): Promise<void>;
}

/** One flag of a command. */
export interface KvctlOption {
  /** Commander syntax: `--limit <n>` takes a value, `--all` is a boolean. */
  readonly flags: string;
  readonly description: string;
  /** Heading the flag is listed under in `--help` (default "Options:"). */
  readonly group?: string;
}

/** One kvctl command. */
export interface KvctlCommand {
  /** What the user types: `kvctl <name> ...`. */
  readonly name: string;
  /** Positional arguments, commander syntax: `<key> <value>`, `[workload]` (checked before run). */
  readonly arguments?: string;
  /** One line for the command list. */
  readonly summary: string;
  /** Longer help for `kvctl <name> --help` (output, exit codes); the flags are listed from `options`. */
  readonly help?: string;
  /** The command's own flags (the global ones come on top). */
  readonly options?: readonly KvctlOption[];
  /** Deadline in ms when --timeout is not given (default: the SDK's). */
  readonly defaultTimeoutMs?: number;
  /** Runs the command; answers the exit code. Throw UsageError or KvError to fail. */
  run(context: KvctlContext): Promise<number>;
}

/** Parses a flag as an integer in [min, max] or throws a UsageError naming the flag. */
export function integerFlag(flag: string, value: string, min: number, max: number): number {
  const number = /^\d+$/.test(value.trim()) ? Number(value.trim()) : Number.NaN;
  if (!Number.isSafeInteger(number) || number < min || number > max) {
    throw new UsageError(`${flag} must be an integer from ${min} to ${max}, got "${value}"`);
  }
  return number;
}

/** The string value of a flag, or undefined. */
export function stringFlag(flags: KvctlFlagValues, name: string): string | undefined {
  const value = flags[name];
  return typeof value === 'string' ? value : undefined;
}
