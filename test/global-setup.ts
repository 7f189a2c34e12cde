import { execFileSync } from 'node:child_process';

/** Tests start real node processes from dist/: build it once (incrementally) before any test. */
export default function setup(): void {
  execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json'], { stdio: 'inherit' });
}
