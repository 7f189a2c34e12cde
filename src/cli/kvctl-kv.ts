/**
 * kvctl data commands: put, get, del, ls.
 */
import { exitCode, integerFlag, stringFlag, UsageError, type KvctlCommand, type KvctlContext } from './kvctl-command.js';
import { bytesField, jsonLine, rawOutput } from './kvctl-format.js';

/** stdin larger than this is refused before it is sent (the node's default limit is 1 MiB). */
const stdinBytesMax = 64 * 1024 * 1024;

/** The key argument, checked for emptiness here so the message is about the command line. */
function keyArgument(context: KvctlContext, index = 0): string {
  const key = context.args[index] ?? '';
  if (key === '') throw new UsageError('the key must not be empty');
  return key;
}

async function readStdin(context: KvctlContext): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of context.io.stdin) {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : Buffer.from(chunk);
    total += bytes.length;
    if (total > stdinBytesMax) throw new UsageError(`stdin is larger than ${stdinBytesMax} bytes`);
    chunks.push(bytes);
  }
  return Buffer.concat(chunks);
}

export const putCommand: KvctlCommand = {
  name: 'put',
  arguments: '<key> <value>',
  summary: 'Store a value ("-" reads it from stdin); prints the old value, if any',
  help: [
    'Stores <value> under <key>. A <value> of "-" reads the value from stdin as raw bytes',
    '(to store a literal "-", pipe it: printf - | kvctl put <key> -).',
    'Prints the value it replaced, raw (a newline is added on a terminal), or nothing.',
    '--json prints {"key", "found", "oldValue"}.',
    'A put that fails with UNAVAILABLE or DEADLINE_EXCEEDED may still be applied: it is not',
    'retried by kvctl once sent, and not rolled back by the cluster; repeat it if needed.',
  ].join('\n'),
  async run(context) {
    const key = keyArgument(context);
    const valueArgument = context.args[1] ?? '';
    const value = valueArgument === '-' ? await readStdin(context) : Buffer.from(valueArgument, 'utf8');
    const result = await context.client().put(key, value);
    if (context.globals.json) {
      await context.write(
        jsonLine({ key, found: result.found, ...(result.oldValue === undefined ? {} : bytesField('oldValue', result.oldValue)) }),
      );
    } else if (result.oldValue !== undefined) {
      await context.write(rawOutput(result.oldValue, context.io.stdout.isTTY));
    }
    return exitCode.ok;
  },
};

export const getCommand: KvctlCommand = {
  name: 'get',
  arguments: '<key>',
  summary: 'Print the value, raw, to stdout (exit 1 if the key does not exist)',
  help: [
    'Prints the value of <key> exactly as stored (a newline is added on a terminal).',
    'If the key does not exist, prints "not found: <key>" to stderr and exits 1.',
    '--json prints {"key", "found", "value"} (also when not found, then exit 1).',
  ].join('\n'),
  async run(context) {
    const key = keyArgument(context);
    const value = await context.client().get(key);
    if (context.globals.json) {
      await context.write(jsonLine({ key, found: value !== undefined, ...(value === undefined ? {} : bytesField('value', value)) }));
    } else if (value !== undefined) {
      await context.write(rawOutput(value, context.io.stdout.isTTY));
    }
    if (value === undefined) {
      context.io.stderr.write(`not found: ${key}\n`);
      return exitCode.notFound;
    }
    return exitCode.ok;
  },
};

export const delCommand: KvctlCommand = {
  name: 'del',
  arguments: '<key>',
  summary: 'Delete a key; prints "deleted" or "not found" (exit 0 either way)',
  help: [
    'Deletes <key> (a replicated tombstone). Prints "deleted" if a live value existed, else',
    '"not found"; both exit 0. --json prints {"key", "found"}.',
  ].join('\n'),
  async run(context) {
    const key = keyArgument(context);
    const found = await context.client().delete(key);
    await context.write(context.globals.json ? jsonLine({ key, found }) : found ? 'deleted\n' : 'not found\n');
    return exitCode.ok;
  },
};

export const lsCommand: KvctlCommand = {
  name: 'ls',
  summary: 'List keys in byte order, one per line, as they stream in',
  options: [
    { flags: '--prefix <p>', description: 'only keys starting with p' },
    { flags: '--start-after <k>', description: 'only keys after k (continue a listing after its last key)' },
    { flags: '--limit <n>', description: 'at most n keys (default: all)' },
  ],
  help: [
    'Lists live keys in ascending byte order, one per line, streaming.',
    '--timeout bounds the wait for each batch, not the whole listing.',
    '--json prints one {"key"} object per line (keyBase64 for keys that are not UTF-8).',
  ].join('\n'),
  async run(context) {
    const limitFlag = stringFlag(context.flags, 'limit');
    const limit = limitFlag === undefined ? undefined : integerFlag('--limit', limitFlag, 0, 0xffff_ffff);
    const prefix = stringFlag(context.flags, 'prefix');
    const startAfter = stringFlag(context.flags, 'start-after');
    const batches = context.client().listKeyBatches({
      ...(prefix === undefined ? {} : { prefix }),
      ...(startAfter === undefined ? {} : { startAfter }),
      ...(limit === undefined ? {} : { limit }),
    });
    const newline = Buffer.from('\n');
    for await (const batch of batches) {
      if (context.globals.json) {
        await context.write(batch.map((key) => jsonLine(bytesField('key', key))).join(''));
      } else {
        await context.write(Buffer.concat(batch.flatMap((key) => [key, newline])));
      }
    }
    return exitCode.ok;
  },
};
