import { seededRandom } from '../replica-state.js';

/**
 * The nemesis's fault schedule: drawn up front from the seed, so the same seed replays the same
 * faults in the same order with the same targets and durations (the workload's interleaving with
 * them still depends on real timing). One fault is active at a time; between faults the cluster
 * is whole for a quiet gap, so a quorum is there for part of every stretch of the run.
 */
export type Fault =
  /** SIGKILL the node, keep it down `downMs`, start it again (same data dir). */
  | { readonly kind: 'kill'; readonly node: string; readonly downMs: number }
  /** SIGSTOP the node for `pausedMs`, then SIGCONT. */
  | { readonly kind: 'pause'; readonly node: string; readonly pausedMs: number }
  /**
   * Minority/majority split: every link between `node` and the two others broken, both
   * directions (`cut`: connections refused and reset; `blackhole`: accepted and silently dropped).
   */
  | { readonly kind: 'isolate'; readonly node: string; readonly mode: 'cut' | 'blackhole'; readonly ms: number }
  /** Only some links: `node`'s outgoing links cut (it cannot reach the others; they still reach it). */
  | { readonly kind: 'one-way'; readonly node: string; readonly ms: number }
  /** Partial partition: `a` and `b` cannot reach each other (both directions); both still reach the third. */
  | { readonly kind: 'partial'; readonly a: string; readonly b: string; readonly ms: number }
  /**
   * Clock skew: restart `node` with KVSTORE_TEST_CLOCK_OFFSET_MS = `offsetMs` (its wall clock runs
   * ahead, or behind when negative), let it serve `ms`, then restart it without the offset.
   * `kill`: the restarts are SIGKILL instead of a graceful stop.
   */
  | { readonly kind: 'skew'; readonly node: string; readonly offsetMs: number; readonly ms: number; readonly kill: boolean }
  /**
   * Failing storage: restart `node` with KVSTORE_TEST_STORAGE_FAULTS (write jobs fail with
   * probability `jobRate`, whole group commits with `commitRate`, drawn from `faultSeed`), let it
   * serve `ms`, then restart it without. `kill`: the restarts are SIGKILL.
   */
  | { readonly kind: 'storage'; readonly node: string; readonly jobRate: number; readonly commitRate: number; readonly faultSeed: number; readonly ms: number; readonly kill: boolean };

export interface ScheduleStep {
  /** When the fault starts, in ms after the workload began (later if the previous step overran). */
  readonly atMs: number;
  readonly fault: Fault;
}

/** Time before the first fault: the workload warms up on a whole cluster. */
const warmupMs = 1500;
/** Quiet gap between two faults (everything healed, every node up), drawn in this range. */
const quietMsMin = 800;
const quietMsMax = 2000;
/** A fault is drawn only if it ends this long before the end of the run (room for the last heal). */
const endMarginMs = 1000;
/** Offsets of the clock-skew fault: far enough to reorder versions across many writes. */
const skewOffsetsMs = [20_000, -20_000, 5_000, -5_000] as const;
/** Failure rates of the storage fault: some writes fail, or most of a node's commits do. */
const storageFaultRates = [0.05, 0.2, 0.5] as const;

/** Relative weights of the fault kinds (skew heavier: it exercises version ordering most). */
const weights: ReadonlyArray<[Fault['kind'], number]> = [
  ['kill', 2],
  ['pause', 2],
  ['isolate', 2],
  ['one-way', 1],
  ['partial', 2],
  ['skew', 3],
  ['storage', 2],
];

/** Draws the schedule for `durationMs` of faults over nodes `ids` from `seed`. */
export function makeSchedule(seed: number, durationMs: number, ids: readonly string[]): ScheduleStep[] {
  const random = seededRandom(seed ^ 0x5eed);
  const between = (min: number, max: number) => Math.round(min + random() * (max - min));
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const totalWeight = weights.reduce((sum, [, w]) => sum + w, 0);
  const drawKind = (): Fault['kind'] => {
    let r = random() * totalWeight;
    for (const [kind, w] of weights) if ((r -= w) < 0) return kind;
    return weights[weights.length - 1]![0];
  };
  const steps: ScheduleStep[] = [];
  let at = warmupMs;
  for (let guard = 0; guard < 10_000; guard++) {
    const node = pick(ids);
    let fault: Fault;
    switch (drawKind()) {
      case 'kill':
        fault = { kind: 'kill', node, downMs: between(1000, 2000) };
        break;
      case 'pause':
        fault = { kind: 'pause', node, pausedMs: between(1000, 3000) };
        break;
      case 'isolate':
        fault = { kind: 'isolate', node, mode: random() < 0.5 ? 'cut' : 'blackhole', ms: between(2000, 5000) };
        break;
      case 'one-way':
        fault = { kind: 'one-way', node, ms: between(2000, 4000) };
        break;
      case 'partial': {
        const others = ids.filter((id) => id !== node);
        fault = { kind: 'partial', a: node, b: pick(others), ms: between(2000, 5000) };
        break;
      }
      case 'skew':
        fault = { kind: 'skew', node, offsetMs: pick(skewOffsetsMs), ms: between(3000, 7000), kill: random() < 0.3 };
        break;
      case 'storage':
        fault = { kind: 'storage', node, jobRate: pick(storageFaultRates), commitRate: pick(storageFaultRates), faultSeed: between(0, 2 ** 31 - 1), ms: between(3000, 6000), kill: random() < 0.3 };
        break;
    }
    const length = faultLengthMs(fault);
    if (at + length + endMarginMs > durationMs) break;
    steps.push({ atMs: at, fault });
    at += length + between(quietMsMin, quietMsMax);
  }
  return steps;
}

/** How long a fault lasts (its restarts not counted). */
export function faultLengthMs(fault: Fault): number {
  switch (fault.kind) {
    case 'kill':
      return fault.downMs;
    case 'pause':
      return fault.pausedMs;
    default:
      return fault.ms;
  }
}

export function describeFault(fault: Fault): string {
  switch (fault.kind) {
    case 'kill':
      return `SIGKILL ${fault.node}, restart after ${fault.downMs} ms`;
    case 'pause':
      return `SIGSTOP ${fault.node} for ${fault.pausedMs} ms, then SIGCONT`;
    case 'isolate':
      return `isolate ${fault.node} (${fault.mode}, both directions) for ${fault.ms} ms`;
    case 'one-way':
      return `cut ${fault.node}'s outgoing links (it cannot reach the others, they reach it) for ${fault.ms} ms`;
    case 'partial':
      return `partial partition: ${fault.a} <-/-> ${fault.b} (both still reach the third) for ${fault.ms} ms`;
    case 'skew':
      return `clock skew: restart ${fault.node} with KVSTORE_TEST_CLOCK_OFFSET_MS=${fault.offsetMs}${fault.kill ? ' (SIGKILL restarts)' : ''} for ${fault.ms} ms, then without`;
    case 'storage':
      return `failing storage: restart ${fault.node} with KVSTORE_TEST_STORAGE_FAULTS=${storageFaultsValue(fault)}${fault.kill ? ' (SIGKILL restarts)' : ''} for ${fault.ms} ms, then without`;
  }
}

/** The KVSTORE_TEST_STORAGE_FAULTS value of a storage fault. */
export function storageFaultsValue(fault: Extract<Fault, { kind: 'storage' }>): string {
  return `job=${fault.jobRate},commit=${fault.commitRate},seed=${fault.faultSeed}`;
}
