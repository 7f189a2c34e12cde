/**
 * Quorum arithmetic for tunable consistency: how many replica acknowledgements a request needs,
 * and whether it can still get them.
 */

/** Per-request consistency: how many of the key's replicas must answer. */
export type ConsistencyLevel = 'one' | 'quorum' | 'all';

/**
 * Acknowledgements required at `level` with `replicationFactor` replicas: one -> 1,
 * quorum -> floor(rf / 2) + 1 (a majority, so any read quorum meets any write quorum), all -> rf.
 * Throws RangeError if the factor is not an integer >= 1.
 *
 * @example requiredAcks('quorum', 3) === 2
 */
export function requiredAcks(level: ConsistencyLevel, replicationFactor: number): number {
  if (!Number.isInteger(replicationFactor) || replicationFactor < 1) {
    throw new RangeError(`replication factor ${replicationFactor} is not an integer >= 1`);
  }
  switch (level) {
    case 'one':
      return 1;
    case 'quorum':
      return Math.floor(replicationFactor / 2) + 1;
    case 'all':
      return replicationFactor;
    default: {
      const unknown: never = level;
      throw new RangeError(`unknown consistency level ${String(unknown)}`);
    }
  }
}

/**
 * Whether `required` acknowledgements are still reachable out of `total` replicas when `acked`
 * have acknowledged and `failed` have failed: the outstanding ones could all still succeed. A
 * coordinator fails a request early (UNAVAILABLE) as soon as this turns false.
 */
export function canStillReach(required: number, acked: number, failed: number, total: number): boolean {
  if (acked < 0 || failed < 0 || acked + failed > total) {
    throw new RangeError(`inconsistent replica counts: acked ${acked}, failed ${failed}, total ${total}`);
  }
  const outstanding = total - acked - failed;
  return acked + outstanding >= required;
}
