import { compareVersions, type Version, versionCounterMax, versionWallMsMax } from './version.js';

/** A clock reading without a node id: what the clock persists as its high-water mark. */
export interface ClockReading {
  readonly wallMs: number;
  readonly counter: number;
}

/**
 * Default bound on how far ahead of this node's wall clock a received version may pull the
 * clock: beyond it, a peer's clock is considered broken and the HLC does not follow it
 * (the record is still stored; LWW stays a pure function of versions).
 */
export const clockDriftMsMax = 60_000;

/**
 * Hybrid logical clock (Kulkarni et al.): versions track wall time when clocks are sane, never go
 * backwards (even if the wall clock does, or across restarts when seeded with the persisted
 * high-water mark), and always exceed every version this node has observed within the drift
 * bound. Pure: the wall clock is injected, so tests drive it by hand.
 */
export class HybridLogicalClock {
  private wallMs: number;
  private counter: number;
  /** Versions observed beyond the drift bound (a peer with a broken clock); for metrics. */
  rejectedDriftCount = 0;
  /**
   * Versions issued just above a stored version beyond the drift bound, without moving the
   * clock there (see nowAbove); for metrics.
   */
  stampedAboveDriftCount = 0;

  constructor(
    readonly nodeId: string,
    /** Wall-clock milliseconds: the node's Clock (src/platform/clock.ts), injected so simulated time reaches it. */
    private readonly physicalNowMs: () => number,
    start: ClockReading = { wallMs: 0, counter: 0 },
    private readonly driftMsMax: number = clockDriftMsMax,
  ) {
    this.wallMs = start.wallMs;
    this.counter = start.counter;
  }

  /** Issues a new version for a local write: strictly greater than every earlier one. */
  now(): Version {
    const physical = this.physicalNowMs();
    if (physical > this.wallMs) {
      this.wallMs = physical;
      this.counter = 0;
    } else {
      this.tick();
    }
    return { wallMs: this.wallMs, counter: this.counter, nodeId: this.nodeId };
  }

  /**
   * Issues a new version greater than `floor` (a version already stored for the key being
   * written) as well as every earlier one. Wall clocks only propose versions; stored versions
   * decide: a write must never be stamped below what its replicas hold, whatever this node's
   * clock says. A floor within the drift bound moves the clock (as observe does); one beyond it
   * (a peer whose clock is far ahead) gets the version right above it, issued for this write
   * only, so one broken clock cannot drag every later version of this node into the future.
   */
  nowAbove(floor: Version | undefined): Version {
    if (floor === undefined) return this.now();
    this.observe(floor);
    const v = this.now();
    if (compareVersions(v, floor) > 0) return v;
    this.stampedAboveDriftCount++;
    if (floor.counter < versionCounterMax) return { wallMs: floor.wallMs, counter: floor.counter + 1, nodeId: this.nodeId };
    if (floor.wallMs >= versionWallMsMax) throw new Error('HLC exhausted: a stored version is at the 48-bit wall-clock limit');
    return { wallMs: floor.wallMs + 1, counter: 0, nodeId: this.nodeId };
  }

  /**
   * Takes in a version seen from elsewhere (a replicated record, a replica read), so that later
   * local versions are greater. Returns false, and leaves the clock alone, if the version is
   * further ahead of the wall clock than the drift bound.
   */
  observe(v: Version): boolean {
    if (v.wallMs < this.wallMs || (v.wallMs === this.wallMs && v.counter <= this.counter)) return true;
    if (v.wallMs > this.physicalNowMs() + this.driftMsMax) {
      this.rejectedDriftCount++;
      return false;
    }
    this.wallMs = v.wallMs;
    this.counter = v.counter;
    return true;
  }

  /** The latest reading issued or observed: persist it, and seed the clock with it on restart. */
  reading(): ClockReading {
    return { wallMs: this.wallMs, counter: this.counter };
  }

  private tick(): void {
    if (this.counter < versionCounterMax) {
      this.counter++;
      return;
    }
    // 65,536 versions in one millisecond: borrow the next millisecond rather than wrap.
    if (this.wallMs >= versionWallMsMax) throw new Error('HLC exhausted: wall clock beyond 48 bits');
    this.wallMs++;
    this.counter = 0;
  }
}
