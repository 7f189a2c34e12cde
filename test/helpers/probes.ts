import { createChannel, createClient } from 'nice-grpc';
import { HealthDefinition } from 'nice-grpc-server-health';
import { runKvctl } from '../../src/cli/kvctl.js';

/** Runs kvctl in this process with no stdin and the given environment; answers its exit code and output. */
export async function kvctl(args: string[], env: Record<string, string> = {}): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runKvctl(args, { stdout: { write: (c) => ((out += c.toString()), true) }, stderr: { write: (c) => ((err += c.toString()), true) }, stdin: (async function* () {})(), env });
  return { code, out, err };
}

/** The standard gRPC health status of a node's public port (1 SERVING, 2 NOT_SERVING). */
export async function healthOf(address: string): Promise<number> {
  const channel = createChannel(address);
  try {
    return (await createClient(HealthDefinition, channel).check({ service: '' })).status;
  } finally {
    channel.close();
  }
}
