// The checker is shared with the deterministic simulator: it lives in src/sim/checker.ts.
export * from '../../../src/sim/checker.js';
