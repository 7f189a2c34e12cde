import { parseArgs } from 'node:util';
import { namePattern, namePatternText, newToken, tokenDigest } from '../server/auth/users-file.js';

const usage = `Usage:
  kvstore auth token --user <name> [--roles role1,role2]
      prints a new random bearer token for <name>, and the line to add under users: in the
      users file (auth.usersFile), with the token's SHA-256 (the token itself is stored nowhere).
      Add the line (or replace the user's old one), then send the node SIGHUP (kill -HUP <pid>).`;

/** `kvstore auth ...`; resolves with the exit code. */
export async function runAuth(argv: string[], out: NodeJS.WritableStream = process.stdout, err: NodeJS.WritableStream = process.stderr): Promise<number> {
  if (argv[0] !== 'token') {
    err.write(`kvstore auth: ${argv[0] === undefined ? 'no subcommand' : `unknown subcommand "${argv[0]}"`}\n${usage}\n`);
    return 2;
  }
  let values;
  try {
    values = parseArgs({ args: argv.slice(1), options: { user: { type: 'string' }, roles: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: false }).values;
  } catch (e) {
    err.write(`kvstore auth token: ${(e as Error).message}\n${usage}\n`);
    return 2;
  }
  if (values.help === true) {
    out.write(`${usage}\n`);
    return 0;
  }
  const user = values.user;
  const roles = (values.roles ?? '').split(',').map((r) => r.trim()).filter((r) => r !== '');
  for (const [what, name] of [['--user', user ?? ''], ...roles.map((r) => ['--roles', r] as const)] as const) {
    if (!namePattern.test(name)) {
      err.write(`kvstore auth token: ${what} ${JSON.stringify(name)} ${namePatternText}\n${usage}\n`);
      return 2;
    }
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
