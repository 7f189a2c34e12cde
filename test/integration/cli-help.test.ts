import type { Command, Option } from 'commander';
import { describe, expect, it } from 'vitest';
import { commandPath, commandTree, runProgram } from '../../src/cli/cli-program.js';
import type { KvctlIo } from '../../src/cli/kvctl-command.js';
import { kvctlCommands } from '../../src/cli/kvctl-commands.js';
import { kvctlProgram, runKvctl } from '../../src/cli/kvctl.js';
import { kvstoreProgram } from '../../src/cli/kvstore.js';
import { localClusterProgram } from '../../src/cli/local-cluster.js';
import { cliBin, describeCli, runCli } from '../helpers/single-node.js';

/**
 * Every command and subcommand of kvstore, kvctl and the local cluster answers --help and rejects
 * an unknown flag with its usage (exit 2). The commands come from the programs' own command trees,
 * so a new command is covered without being listed here. The built programs (dist/) are run.
 */

type Bin = 'kvstore' | 'kvctl' | 'local-cluster';

/** Output collected from an in-process run. */
function collector() {
  let out = '';
  let err = '';
  return {
    stdout: { write: (chunk: string | Uint8Array) => ((out += chunk.toString()), true) },
    stderr: { write: (chunk: string | Uint8Array) => ((err += chunk.toString()), true) },
    out: () => out,
    err: () => err,
  };
}

const programs: Record<Bin, (streams: Pick<KvctlIo, 'stdout' | 'stderr'>) => Command> = {
  kvstore: (streams) => kvstoreProgram(streams),
  kvctl: (streams) => kvctlProgram(streams, async () => 0),
  'local-cluster': (streams) => localClusterProgram(streams),
};

interface Case {
  bin: Bin;
  /** What the user types, e.g. "kvstore auth token". */
  path: string;
  /** The words after the program name. */
  words: string[];
  /** Flags the help must name: the command's own, and the global ones its help lists. */
  flags: string[];
  subcommands: string[];
}

function casesOf(bin: Bin): Case[] {
  return commandTree(programs[bin](collector())).map((command) => {
    const help = command.createHelp();
    const options: Option[] = [...help.visibleOptions(command), ...(help.showGlobalOptions ? help.visibleGlobalOptions(command) : [])];
    return {
      bin,
      path: commandPath(command),
      words: commandPath(command).split(' ').slice(1),
      flags: options.map((option) => option.long ?? option.short ?? option.flags),
      subcommands: command.commands.map((sub) => sub.name()),
    };
  });
}

const cases = (['kvstore', 'kvctl', 'local-cluster'] as const).flatMap(casesOf);

/** The built program, with no KVSTORE_* variables (they must not matter for usage). */
function run(bin: Bin, args: readonly string[]) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('KVSTORE_')));
  return runCli(cliBin(bin), args, 20_000, env);
}

describe('the command tables', () => {
  it('hold every command of kvstore and kvctl', () => {
    const paths = cases.map((c) => c.path);
    expect(paths).toEqual(expect.arrayContaining(['kvstore', 'kvstore restore', 'kvstore certs', 'kvstore auth', 'kvstore auth token', 'kvstore help', 'kvctl', 'kvctl help', 'local-cluster']));
    expect(paths).toEqual(expect.arrayContaining(kvctlCommands.map((command) => `kvctl ${command.name}`)));
  });
});

describe.each(cases)('$path', ({ bin, path, words, flags, subcommands }) => {
  it('--help: exit 0, its usage, every flag and subcommand', async () => {
    const result = await run(bin, [...words, '--help']);
    expect(result.code, describeCli(result)).toBe(0);
    expect(result.stdout.startsWith(`Usage: ${path} `), describeCli(result)).toBe(true);
    expect(flags).toContain('--help');
    for (const flag of flags) expect(result.stdout, flag).toContain(flag);
    for (const sub of subcommands) expect(result.stdout, sub).toMatch(new RegExp(`^  ${sub}\\b`, 'm'));
    expect(result.stderr).toBe('');
  });

  it('an unknown flag: exit 2, naming it, with the usage and a pointer to --help', async () => {
    const result = await run(bin, [...words, '--no-such-flag']);
    expect(result.code, describeCli(result)).toBe(2);
    expect(result.stderr, describeCli(result)).toContain(`${path}: unknown option '--no-such-flag'`);
    expect(result.stderr).toContain(`Usage: ${path} `);
    expect(result.stderr).toContain(`${path} --help`);
    expect(result.stdout).toBe('');
  });
});

/** Runs a program in-process (nothing here reaches a command's action but help's). */
async function inProcess(bin: Bin, argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const io = collector();
  const code = bin === 'kvctl' ? await runKvctl(argv, { ...io, stdin: (async function* () {})() }) : await runProgram(programs[bin](io), argv);
  return { code, out: io.out(), err: io.err() };
}

describe('help <command>', () => {
  const withHelp = cases.filter((c) => c.subcommands.includes('help'));
  it.each(cases.filter((c) => c.words.length > 0 && c.bin !== 'local-cluster'))('$path: help <command> prints what --help prints', async ({ bin, words }) => {
    const [first, ...rest] = words;
    // `kvstore auth token`: `kvstore help auth token` and `kvstore auth help token`.
    const parents = [[], ...(rest.length > 0 ? [[first!]] : [])];
    const expected = await inProcess(bin, [...words, '--help']);
    expect(expected.code).toBe(0);
    for (const parent of parents) {
      const viaHelp = await inProcess(bin, [...parent, 'help', ...words.slice(parent.length)]);
      expect(viaHelp).toEqual(expected);
    }
  });

  it.each(withHelp)('$path help: its own help; an unknown command: exit 2, naming it', async ({ bin, path, words }) => {
    expect(await inProcess(bin, [...words, 'help'])).toEqual(await inProcess(bin, [...words, '--help']));
    const unknown = await inProcess(bin, [...words, 'help', 'no-such-command']);
    expect(unknown.code).toBe(2);
    expect(unknown.err).toContain(`${path} help: unknown command 'no-such-command'`);
    const bare = await inProcess(bin, [...words, 'no-such-command']);
    expect(bare.code).toBe(2);
    expect(bare.err).toContain(`${path}: unknown command 'no-such-command'`);
    expect(bare.err).toContain(`Usage: ${path} `);
  });
});
