/**
 * Workloads: which operations a benchmark issues, in what proportions, over which key
 * distribution by default, and whether the keys are written once before measuring.
 */
import type { Distribution } from './key-chooser.js';
import type { Rng } from '../common/rng.js';

export const opNames = ['get', 'put', 'delete'] as const;
export type OpName = (typeof opNames)[number];

export const workloadNames = ['put', 'get', 'delete', 'mixed', 'ycsb-a', 'ycsb-b'] as const;
export type WorkloadName = (typeof workloadNames)[number];

/** Default share of reads of the `mixed` workload. */
export const readRatioDefault = 0.9;

/** Fraction of each operation; they sum to 1. */
export type OpMix = Record<OpName, number>;

/** What a workload does when the command line does not say otherwise. */
export interface WorkloadDefaults {
  readonly distribution: Distribution;
  readonly preload: boolean;
  readonly description: string;
}

export const workloadDefaults: Record<WorkloadName, WorkloadDefaults> = {
  put: { distribution: 'uniform', preload: false, description: '100% put' },
  get: { distribution: 'uniform', preload: true, description: '100% get' },
  delete: { distribution: 'uniform', preload: false, description: '100% delete' },
  mixed: { distribution: 'uniform', preload: true, description: 'get with --read-ratio, delete with --delete-ratio, put otherwise' },
  // YCSB core workloads A and B use a zipfian request distribution; "update" is a put here.
  'ycsb-a': { distribution: 'zipfian', preload: true, description: 'YCSB A: 50% get, 50% update (put)' },
  'ycsb-b': { distribution: 'zipfian', preload: true, description: 'YCSB B: 95% get, 5% update (put)' },
};

export function isWorkloadName(value: string): value is WorkloadName {
  return (workloadNames as readonly string[]).includes(value);
}

/**
 * The operation mix of a workload. `readRatio` and `deleteRatio` apply to `mixed` only (the other
 * workloads have a fixed mix).
 *
 * @throws RangeError if a ratio is outside [0, 1] or readRatio + deleteRatio > 1
 */
export function opMixOf(workload: WorkloadName, readRatio = readRatioDefault, deleteRatio = 0): OpMix {
  switch (workload) {
    case 'put':
      return { get: 0, put: 1, delete: 0 };
    case 'get':
      return { get: 1, put: 0, delete: 0 };
    case 'delete':
      return { get: 0, put: 0, delete: 1 };
    case 'ycsb-a':
      return { get: 0.5, put: 0.5, delete: 0 };
    case 'ycsb-b':
      return { get: 0.95, put: 0.05, delete: 0 };
    case 'mixed': {
      for (const [name, ratio] of [['read ratio', readRatio], ['delete ratio', deleteRatio]] as const) {
        if (!Number.isFinite(ratio) || ratio < 0 || ratio > 1) throw new RangeError(`${name} must be from 0 to 1, got ${ratio}`);
      }
      if (readRatio + deleteRatio > 1 + 1e-9) {
        throw new RangeError(`read ratio + delete ratio must be at most 1, got ${readRatio} + ${deleteRatio}`);
      }
      return { get: readRatio, put: Math.max(0, 1 - readRatio - deleteRatio), delete: deleteRatio };
    }
  }
}

/** The operations a mix issues at all, in table order. */
export function opsOf(mix: OpMix): OpName[] {
  return opNames.filter((op) => mix[op] > 0);
}

/** Draws operations in the proportions of a mix. */
export class OpChooser {
  private readonly getBound: number;
  private readonly putBound: number;

  constructor(readonly mix: OpMix) {
    this.getBound = mix.get;
    this.putBound = mix.get + mix.put;
  }

  next(rng: Rng): OpName {
    if (this.getBound >= 1) return 'get';
    if (this.putBound <= 0) return 'delete';
    const u = rng.next();
    if (u < this.getBound) return 'get';
    if (u < this.putBound) return 'put';
    return 'delete';
  }
}
