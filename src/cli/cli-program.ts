/**
 * What every kvstore command-line program (kvstore, kvctl, the local cluster) shares, over
 * commander: `--help` on every command and subcommand, unknown flags and other usage errors
 * rejected the same way (`<command>: <problem>`, then its usage line and where to find more; exit
 * 2), output to given streams (tests run kvctl in-process) and never `process.exit`.
 */
import { Command, CommanderError, type Option } from 'commander';

/** Exit code of every usage error (unknown command or flag, missing or invalid argument). */
export const usageExitCode = 2;

/** A bad command line found by a command's own checks: reported as commander's errors are, exit 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** Where a program writes (process.stdout / process.stderr, or a test's collector). */
export interface CliStreams {
  stdout: { write(chunk: string): unknown; isTTY?: boolean; columns?: number };
  stderr: { write(chunk: string): unknown; isTTY?: boolean; columns?: number };
}

/** Help is wrapped at this width, or the terminal's if narrower. */
const helpWidthMax = 100;

const exitCodes = new WeakMap<Command, number>();

function rootOf(command: Command): Command {
  let root = command;
  while (root.parent !== null) root = root.parent;
  return root;
}

/** `command` and every subcommand below it. */
export function commandTree(command: Command): Command[] {
  return [command, ...command.commands.flatMap((sub) => commandTree(sub))];
}

/** What the user types to reach `command`: "kvctl get", "kvstore auth token". */
export function commandPath(command: Command): string {
  return command.parent === null ? command.name() : `${commandPath(command.parent)} ${command.name()}`;
}

/** The text of a usage error: `<command>: <message>`, its usage line, where to find more. */
export function usageErrorText(command: Command, message: string): string {
  const path = commandPath(command);
  // One line: commander puts its "(Did you mean --json?)" on a line of its own.
  const text = message.replace(/^error: /, '').trim().replace(/\s*\n\s*/g, ' ');
  return `${path}: ${text}\nUsage: ${command.createHelp().commandUsage(command)}  (more: ${path} --help)\n`;
}

/**
 * A new program named `name` writing to `streams`: parse errors throw (runProgram turns them
 * into exit codes), `-h, --help` on every command. Set up subcommands with `.command()` so they
 * inherit this.
 */
export function newProgram(name: string, streams: CliStreams): Command {
  const width = (stream: CliStreams['stdout']) => Math.min(helpWidthMax, stream.isTTY === true && stream.columns !== undefined ? stream.columns : helpWidthMax);
  return new Command(name)
    .exitOverride()
    .configureOutput({
      writeOut: (text) => void streams.stdout.write(text),
      writeErr: (text) => void streams.stderr.write(text),
      getOutHelpWidth: () => width(streams.stdout),
      getErrHelpWidth: () => width(streams.stderr),
      getOutHasColors: () => false,
      getErrHasColors: () => false,
    })
    .helpOption('-h, --help', 'show this help')
    // commandsOnly adds a `help [command...]` that names an unknown command instead of printing the whole help.
    .helpCommand(false);
}

/** Reports a usage error of `command` (its path, the message, its usage line) and ends the parse: exit 2. */
export function usageError(command: Command, message: string): never {
  return command.error(message, { exitCode: usageExitCode, code: 'kvstore.usage' });
}

/** Makes `run`'s answer the exit code runProgram answers. A UsageError it throws is reported as a usage error of `command`. */
export function handle<Args extends unknown[]>(command: Command, run: (...args: Args) => number | Promise<number>): Command {
  return command.action(async (...args: unknown[]) => {
    let code: number;
    try {
      code = await run(...(args as Args));
    } catch (error) {
      if (error instanceof UsageError) usageError(command, error.message);
      throw error;
    }
    exitCodes.set(rootOf(command), code);
  });
}

/**
 * Options that must be given, checked in the action rather than with commander's requiredOption,
 * which checks them before unknown flags (`restore --bogus` would complain about --from, not
 * about --bogus).
 */
export function requireOptions(command: Command, ...names: string[]): void {
  for (const name of names) {
    const option = command.options.find((candidate: Option) => candidate.attributeName() === name);
    if (command.getOptionValue(name) === undefined) throw new UsageError(`required option '${option?.flags ?? name}' not specified`);
  }
}

/** `(commands: a, b, c)` of `command`. */
function commandList(command: Command): string {
  return `(commands: ${command.commands.map((sub) => sub.name()).join(', ')})`;
}

/**
 * For a command whose only positionals are its subcommands' names: adds `help [command...]`, and
 * makes words that name no subcommand an error listing them. Without `orRun`, no command at all is
 * one too; with it, that runs `orRun`. Call after adding the subcommands (they must not inherit
 * the settings).
 */
export function commandsOnly(command: Command, orRun?: (options: never) => number | Promise<number>): Command {
  const help = command.command('help').summary('show the help of a command').argument('[command...]', 'the command (and subcommand)');
  handle(help, (names: string[]) => {
    let target = command;
    for (const name of names) {
      const sub = target.commands.find((candidate) => candidate.name() === name);
      if (sub === undefined) throw new UsageError(`unknown command '${name}' ${commandList(target)}`);
      target = sub;
    }
    target.outputHelp();
    return 0;
  });
  command.allowExcessArguments(true);
  return handle(command, (options: never) => {
    const [word] = command.args;
    if (word !== undefined) throw new UsageError(`unknown command '${word}' ${commandList(command)}`);
    if (orRun === undefined) throw new UsageError(`no command given ${commandList(command)}`);
    return orRun(options);
  });
}

/**
 * Parses `argv` (the arguments after the program name) and runs the chosen command. Answers the
 * exit code: the action's, 0 after `--help`, 2 for any usage error (printed with the usage line).
 */
export async function runProgram(program: Command, argv: readonly string[]): Promise<number> {
  // Each command prints its own errors: it knows its path and usage line.
  for (const command of commandTree(program)) {
    command.configureOutput({ outputError: (text, write) => write(usageErrorText(command, text)) });
  }
  try {
    await program.parseAsync([...argv], { from: 'user' });
  } catch (error) {
    if (!(error instanceof CommanderError)) throw error;
    return error.code === 'commander.helpDisplayed' ? 0 : usageExitCode;
  }
  return exitCodes.get(program) ?? 0;
}
