import { describe, expect, it } from 'vitest';
import type { MemberStatus, NodeStatus } from '../../src/client/index.js';
import { formatMembers, stalledChangeHint } from '../../src/cli/kvctl-member.js';

const member = (nodeId: string, peer: string, self: boolean): MemberStatus => ({
  nodeId, peer, self, reachable: true, backlogEntries: 0, backlogBytes: 0, backlogOldestAgeMs: 0, droppedEntries: 0, lastExchangeRepaired: 0, state: 'normal', ownedShare: 1, dead: false,
});
const status = (members: MemberStatus[], redacted: boolean): NodeStatus => ({
  nodeId: 'node1', uptimeSeconds: 1, keyCount: 0, recordCount: 0, replicationFactor: 1, listen: '127.0.0.1:50051', dataDir: redacted ? '' : '/d', version: '0.1.0',
  members, membershipEpoch: 1, tombstonesPurged: 0, warnings: [], redacted,
});

describe('kvctl member list', () => {
  it('a single node without a peer port shows "-", a redacted answer "(needs admin)"', () => {
    expect(formatMembers(status([member('node1', '', true)], false))).toMatch(/^node1\s+-\s+normal\s+100\.0%\s+self/m);
    expect(formatMembers(status([member('node1', '', true)], true))).toMatch(/^node1\s+\(needs admin\)\s+normal/m);
    expect(formatMembers(status([member('n1', '10.0.0.1:7000', true)], false))).toMatch(/^n1\s+10\.0\.0\.1:7000\s+normal/m);
  });

  it('shows the change in progress with its pending ranges, and DEAD for a member declared dead', () => {
    const changing: NodeStatus = {
      ...status([member('n1', 'a:1', true), { ...member('n2', 'b:2', false), dead: true, reachable: false }], false),
      membershipChange: 'change 1: add n4 (d:4), phase pending, streaming 3/8 ranges, 1200 keys',
      membershipChangeProgress: { transfersDone: 3, transfersTotal: 8, keys: 1200, bytes: 3 * 2 ** 20 },
    };
    const out = formatMembers(changing);
    expect(out).toContain('change: change 1: add n4 (d:4), phase pending, streaming 3/8 ranges, 1200 keys (5 of 8 ranges pending, 3.0 MiB received)');
    expect(out).toMatch(/^n2\s+b:2\s+normal DEAD\s+100\.0%\s+NO$/m);
  });

  it('explains a change whose streaming stalled, naming the members the answering node cannot reach', () => {
    const stalled = status([member('n1', 'a:1', true), { ...member('n2', 'b:2', false), reachable: false }, member('n3', 'c:3', false)], false);
    const hint = stalledChangeHint(stalled, 31_000);
    expect(hint).toContain('no streaming progress for 31.0s');
    expect(hint).toContain('peer unreachable');
    expect(hint).toMatch(/Unreachable from node1 now: n2\.$/);
    expect(stalledChangeHint(status([member('n1', 'a:1', true)], false), 31_000)).not.toContain('Unreachable from');
  });
});
