import type { Command } from 'commander';
import { namePattern, namePatternText, newToken, tokenDigest } from '../server/auth/users-file.js';
import { commandsOnly, handle, requireOptions, UsageError } from './cli-program.js';

/** Adds `kvstore auth` (and its subcommand `token`) to `parent`. */
export function addAuthCommand(parent: Command): Command {
  const auth = parent.command('auth').summary('manage bearer tokens (auth.usersFile)').description('Bearer tokens for the users file (auth.usersFile).');
  const token = auth
    .command('token')
    .summary('print a new bearer token and its users-file line')
    .description(
      [
        'Prints a new random bearer token for --user, and the line to add under users: in the users',
        "file (auth.usersFile), with the token's SHA-256 (the token itself is stored nowhere). Add the",
        "line (or replace the user's old one), then send the node SIGHUP (kill -HUP <pid>).",
      ].join('\n'),
    )
    .usage('--user <name> [--roles <roles>]')
    .option('--user <name>', 'the user the token is for (required)')
    .option('--roles <roles>', 'roles of the user, comma-separated: role1,role2');
  handle(token, (values: { user?: string; roles?: string }) => {
    requireOptions(token, 'user');
    return runAuthToken({ user: values.user!, roles: values.roles ?? '' });
  });
  return commandsOnly(auth);
}

/** `kvstore auth token ...`; resolves with the exit code. */
export async function runAuthToken(values: { user: string; roles: string }, out: NodeJS.WritableStream = process.stdout): Promise<number> {
  const user = values.user;
  const roles = values.roles.split(',').map((r) => r.trim()).filter((r) => r !== '');
  for (const [what, name] of [['--user', user], ...roles.map((r) => ['--roles', r] as const)] as const) {
    if (!namePattern.test(name)) throw new UsageError(`${what} ${JSON.stringify(name)} ${namePatternText}`);
  }
  const token = newToken();
  out.write(
    [
      `# bearer token of user ${user}: give it to the client (kvctl --token or KVSTORE_TOKEN, KvClient { token }); it is shown only now`,
      token,
      `# the line for the users: section of the users file (auth.usersFile); then send the node SIGHUP`,
      `  ${user}: { roles: [${roles.join(', ')}], tokenSha256: ${tokenDigest(token).toString('hex')} }`,
      '',
    ].join('\n'),
  );
  return 0;
}
