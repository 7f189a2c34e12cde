import { z } from 'zod';

/**
 * The cluster's membership as persisted on every node (docs/membership.md, section 1): an epoch,
 * raised by one at every change of the member list, and the members with their states.
 *
 * What exists today is the first step of that design: the state is seeded from
 * `cluster.members` and persisted, and `kvctl member list` shows it. Members do not change by
 * command yet; until they do, an edited `cluster.members` is adopted at start as the next epoch
 * (see reconcileMembership), which is the only way the list changes.
 */
export type MemberState = 'joining' | 'normal' | 'leaving' | 'removed';

export interface Member {
  readonly id: string;
  /** host:port of its peer (internal) API. */
  readonly peer: string;
  readonly state: MemberState;
}

export interface MembershipState {
  readonly formatVersion: 1;
  readonly epoch: number;
  /** Members sorted by id. */
  readonly members: readonly Member[];
}

const membershipSchema = z.object({
  formatVersion: z.literal(1),
  epoch: z.number().int().min(1),
  members: z.array(z.object({ id: z.string().min(1), peer: z.string(), state: z.enum(['joining', 'normal', 'leaving', 'removed']) })).min(1),
});

/** The state of a cluster first formed from `members` (all normal, epoch 1). */
export function seedMembership(members: readonly { id: string; peer: string }[]): MembershipState {
  return { formatVersion: 1, epoch: 1, members: sortById(members.map((m) => ({ id: m.id, peer: m.peer, state: 'normal' as const }))) };
}

/**
 * The state to run with, given what this node stored (undefined on a new data dir) and the
 * configured members: the stored state when the configuration agrees with it; otherwise the
 * configured list as the next epoch, with `changed` saying what differs (for the log).
 */
export function reconcileMembership(stored: MembershipState | undefined, configured: readonly { id: string; peer: string }[]): { state: MembershipState; changed: string | undefined } {
  const seeded = seedMembership(configured);
  if (stored === undefined) return { state: seeded, changed: undefined };
  const current = stored.members.filter((m) => m.state !== 'removed');
  const describe = (ms: readonly { id: string; peer: string }[]) => ms.map((m) => `${m.id}@${m.peer}`).join(', ');
  if (describe(current) === describe(seeded.members)) return { state: stored, changed: undefined };
  const removed = stored.members.filter((m) => !seeded.members.some((c) => c.id === m.id)).map((m) => ({ ...m, state: 'removed' as const }));
  return {
    state: { formatVersion: 1, epoch: stored.epoch + 1, members: sortById([...seeded.members, ...removed]) },
    changed: `cluster.members (${describe(seeded.members)}) differs from the stored membership of epoch ${stored.epoch} (${describe(current)})`,
  };
}

export function encodeMembership(state: MembershipState): Buffer {
  return Buffer.from(JSON.stringify(state), 'utf8');
}

/** Decodes a stored state; throws with the reason if it is not one. */
export function decodeMembership(bytes: Uint8Array): MembershipState {
  const parsed = membershipSchema.safeParse(JSON.parse(Buffer.from(bytes).toString('utf8')));
  if (!parsed.success) throw new Error(`stored membership is malformed: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  return { formatVersion: 1, epoch: parsed.data.epoch, members: sortById(parsed.data.members) };
}

function sortById<T extends { id: string }>(members: readonly T[]): T[] {
  return [...members].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}
