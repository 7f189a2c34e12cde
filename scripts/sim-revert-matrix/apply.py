# The data-safety fixes the revert matrix can undo (scripts/sim-revert-matrix/run.sh), each a
# text replacement in the working tree: name -> [(file, the fix, the code without it)].
import sys
import os
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..') + '/'
R = {
 'age-only': [('src/replication/tombstone-gc.ts', "    for (const link of this.links) {\n      let answer", "    for (const link of [] as PeerLink[]) {\n      let answer")],
 'held': [('src/replication/tombstone-gc.ts', "const purgeable = mine.filter((t, i) => held[i] && (", "const purgeable = mine.filter((t, i) => (")],
 'floor': [('src/replication/tombstone-gc.ts', "held[i] && (logFloorMs === undefined || recordWallMs(t.record) < logFloorMs)", "held[i] && (logFloorMs === undefined || logFloorMs > -1 || recordWallMs(t.record) < logFloorMs)")],
 'refuse': [('src/replication/replica.ts', "request.fromLog ? refuse : undefined", "request.fromLog && false ? refuse : undefined")],
 'send-drop': [('src/replication/delivery-loop.ts', "      else if (entry.enqueuedAtMs < oldestSendableMs && ", "      else if (false && entry.enqueuedAtMs < oldestSendableMs && ")],
 'age-cap': [('src/server/node-core.ts', "const entryAgeSeconds = config.hints.maxAgeSeconds === 0 ? graceAge : Math.min(config.hints.maxAgeSeconds, graceAge);", "const entryAgeSeconds = config.hints.maxAgeSeconds + 0 * graceAge;")],
 'no-high-water': [('src/server/node-core.ts', 'new HybridLogicalClock(selfId, wallClock, repo.clockReading(), config.clock.maxDriftMs)', 'new HybridLogicalClock(selfId, wallClock, undefined, config.clock.maxDriftMs)')],
 'no-peer-seed': [('src/server/node-core.ts', '        if (links.length === 0) return;\n        const timeoutMs', '        if (links.length >= 0) return;\n        const timeoutMs')],
 'job-isolation': [('src/storage/repository.ts', 'results[i] = this.env.childTransaction(() => {', 'results[i] = ((run: () => unknown) => run())(() => {')],
 'trees-after-flush': [('src/storage/repository.ts', '          for (const c of jobChanges) changes.push(c);', '          for (const c of jobChanges) changes.push(c);\n          this.applyChanges(jobChanges);'), ('src/storage/repository.ts', 'this.applyChanges(this.unflushedChanges.shift()!.changes);', 'this.unflushedChanges.shift();')],
 'now-above': [('src/replication/coordinator.ts', 'const version = this.clock.nowAbove(floor === undefined ? undefined : decodeRecordHeader(floor).version);', 'const version = this.clock.now(); void floor;')],
 'deadline-race': [('src/replication/deadline.ts', '      promise.catch(() => {});\n      return Promise.reject', '      return Promise.reject')],
 'fencing': [('src/server/node-core.ts', 'has: (id) => live.isLive(id),', 'has: (id) => live.member(id) !== undefined,')],
 'gc-epoch-recheck': [('src/replication/tombstone-gc.ts', 'if (this.membership.view().epoch !== view.epoch) {', 'if (false && this.membership.view().epoch !== view.epoch) {')],
 'purge-moving': [('src/replication/replica.ts', 'request.tombstones.filter((t) => !view.isMovingHash(view.readRing.hashKey(t.key)))', 'request.tombstones.filter((t) => true || !view.isMovingHash(view.readRing.hashKey(t.key)))')],
 'own-last': [('src/replication/tombstone-gc.ts', 'purgeable.filter((t) => !keptElsewhere.has(t) && !settled.isMovingHash(settled.readRing.hashKey(t.key)))', 'purgeable.filter(() => settled !== undefined && keptElsewhere !== undefined)')],
 'local-repair-grace': [('src/replication/coordinator.ts', "stored === undefined && recordWallMs(record) < oldestAcceptedMs ? 'older-than-grace'", "false && stored === undefined && recordWallMs(record) < oldestAcceptedMs ? 'older-than-grace'")],
}
for name in sys.argv[1:]:
    for (p, a, b) in R[name]:
        s = open(root + p).read()
        assert a in s, (name, p)
        open(root + p, 'w').write(s.replace(a, b))
