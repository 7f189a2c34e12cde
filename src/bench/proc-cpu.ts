/**
 * CPU time of other processes (the kvstore servers), from Linux's /proc/<pid>/stat: utime + stime
 * of the whole process (every thread), in clock ticks (usually 100 per second, so 10 ms
 * resolution). Elsewhere (no /proc) the figures are simply unavailable.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** Linux's USER_HZ on every common architecture; used when `getconf CLK_TCK` is unavailable. */
export const clockTicksPerSecondDefault = 100;
const microsPerSecond = 1_000_000;

let cachedTicks: number | undefined;

/** The kernel's clock ticks per second (`getconf CLK_TCK`), cached. */
export function clockTicksPerSecond(): number {
  if (cachedTicks !== undefined) return cachedTicks;
  try {
    const value = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
    cachedTicks = Number.isInteger(value) && value > 0 ? value : clockTicksPerSecondDefault;
  } catch {
    cachedTicks = clockTicksPerSecondDefault;
  }
  return cachedTicks;
}

/** utime and stime (fields 14 and 15) of a /proc/<pid>/stat line, in clock ticks. */
export function parseProcStat(text: string): { utimeTicks: number; stimeTicks: number } {
  // Field 2 is the command name in parentheses and may itself hold spaces and parentheses:
  // the fields after it start after the last ')'.
  const close = text.lastIndexOf(')');
  if (close < 0) throw new Error('not a /proc/<pid>/stat line');
  const fields = text.slice(close + 2).trim().split(/\s+/);
  // fields[0] is field 3 (state), so field n is fields[n - 3].
  const utimeTicks = Number(fields[14 - 3]);
  const stimeTicks = Number(fields[15 - 3]);
  if (!Number.isFinite(utimeTicks) || !Number.isFinite(stimeTicks)) throw new Error('malformed /proc/<pid>/stat line');
  return { utimeTicks, stimeTicks };
}

/** User + system CPU time of process `pid` so far, in microseconds; undefined if unreadable. */
export function processCpuMicros(pid: number): number | undefined {
  try {
    const { utimeTicks, stimeTicks } = parseProcStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    return ((utimeTicks + stimeTicks) * microsPerSecond) / clockTicksPerSecond();
  } catch {
    return undefined;
  }
}

/** CPU microseconds of several processes at one moment (undefined for those unreadable). */
export function snapshotCpu(pids: readonly number[]): (number | undefined)[] {
  return pids.map((pid) => processCpuMicros(pid));
}
