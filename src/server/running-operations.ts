/**
 * Most Batch and OperationStream operations the node runs at once, over every call. An
 * operation's answer (a get's value, a put's old value) is only known once it has run, so the
 * in-flight budget can count it only then; this bounds how far past the budget the answers of
 * operations already running can take a node: by this many times limits.maxValueBytes. A Batch
 * of 1,024 gets of one 1 MiB key drove a node to 4.5 GB resident before it (issue 14).
 *
 * Slots bound throughput to slots / latency: 128 slots at a 2 ms quorum write is 64,000
 * operations a second, several times what a node here serves, and 128 is what a 128-client
 * benchmark keeps in flight, so it does not throttle it (BENCHMARKS.md, "Bounded answers"). With
 * 256 slots a Batch of 1,024 gets of a 1 MiB key answered 256 MiB and the node peaked 1 GB above
 * its resting size (encoding a message copies it more than once); 128 halves that.
 */
export const runningOperationsMaxDefault = 128;

/**
 * A first-come-first-served count of operation slots. `run` waits for a slot, runs, and gives
 * the slot back however the operation ends. Nothing waits while holding a slot on anything but
 * the operation itself, so slots are always given back.
 */
export class RunningOperations {
  private running = 0;
  private readonly waiting: (() => void)[] = [];
  /** Operations that had to wait for a slot since start, for /metrics. */
  waited = 0;

  constructor(readonly max: number = runningOperationsMaxDefault) {}

  /** Operations holding a slot now. */
  get count(): number {
    return this.running;
  }

  run<T>(operation: () => Promise<T>): Promise<T> {
    // The common case, a free slot, costs no extra promise or async frame: it is on the path of
    // every stream operation.
    if (this.running < this.max && this.waiting.length === 0) {
      this.running++;
      return this.start(operation);
    }
    this.waited++;
    return new Promise<void>((resolve) => this.waiting.push(resolve)).then(() => this.start(operation));
  }

  /** Runs `operation` in a slot already taken, giving it back however it ends (a synchronous throw too). */
  private start<T>(operation: () => Promise<T>): Promise<T> {
    let result: Promise<T>;
    try {
      result = operation();
    } catch (error) {
      this.release();
      return Promise.reject(error);
    }
    result.then(this.release, this.release);
    return result;
  }

  private readonly release = (): void => {
    const next = this.waiting.shift();
    // The slot passes straight to the next in line (the count stays).
    if (next !== undefined) next();
    else this.running--;
  };
}
