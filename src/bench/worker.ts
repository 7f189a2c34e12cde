/**
 * Entry point of a load-generating worker thread (started by runner.ts): connects, then obeys
 * the main thread's `preload` / `run` / `stop` / `abort` messages (see messages.ts).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { ConnectError, errorMessage } from './driver.js';
import { LoadGenerator } from './load-generator.js';
import type { MainToWorker, WorkerInit, WorkerToMain } from './messages.js';

function main(): void {
  const port = parentPort;
  if (port === null) throw new Error('bench worker: must run as a worker thread');
  const post = (message: WorkerToMain): void => port.postMessage(message);
  const fail = (error: unknown): void => post({ type: 'failed', message: errorMessage(error), unreachable: error instanceof ConnectError });
  const generator = new LoadGenerator(workerData as WorkerInit, post);

  port.on('message', (message: MainToWorker) => {
    switch (message.type) {
      case 'preload':
        generator.preload().then((outcome) => post({ type: 'preloaded', ...outcome }), fail);
        return;
      case 'run':
        generator.run(message).then(
          (result) => {
            generator.close();
            post({ type: 'result', result });
          },
          fail,
        );
        return;
      case 'stop':
        generator.stop();
        return;
      case 'abort':
        generator.abort();
        return;
    }
  });
  generator.connect().then(() => post({ type: 'ready' }), fail);
}

main();
