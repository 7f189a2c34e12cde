import { runSimulation } from '../../dist/src/sim/simulation.js';
const [from, count, nodes] = process.argv.slice(2, 5).map(Number);
// SLOW_STREAMING=1: as explore's --slow-streaming (a membership change stays pending for seconds).
const slowStreaming = process.env.SLOW_STREAMING === '1';
const failed = [];
let purged = 0;
let markDeads = 0;
let committed = 0;
let deadRan = 0;
let aliveRefused = 0;
for (let s = from; s < from + count; s++) {
  const r = await runSimulation({ seed: s, nodes: nodes || 3, ...(slowStreaming ? { slowStreaming: true } : {}) });
  purged += r.tombstonesPurged;
  const m = r.membership;
  if (m.markDeadOf !== undefined) markDeads++;
  if (m.markDeadCommitted) committed++;
  if (m.deadMemberRan) deadRan++;
  aliveRefused += m.aliveProbes.refusedNotDead;
  if (r.violations.length) { failed.push(s); console.log(`seed ${s}: ${r.violations[0].kind}: ${r.violations[0].message.slice(0, 160)}`); }
}
console.log(`failed: [${failed.join(',')}] of ${count} from ${from}; purged ${purged}; mark-dead drawn ${markDeads}, committed ${committed}, dead member ran again ${deadRan}; live mark-dead refused ${aliveRefused}`);
