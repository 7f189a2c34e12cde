/**
 * `--out report.json`: the whole {@link BenchReport} as pretty-printed JSON (schema
 * `kvstore-bench/1`; field names carry their unit: `p99Ms`, `totalMicros`, `seconds`).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { BenchReport } from './report.js';

export function reportToJson(report: BenchReport): string {
  return `${JSON.stringify(report, null, 2)}\n`;
}

/** Writes the report to `path`, creating its directory if needed. */
export function writeJsonReport(path: string, report: BenchReport): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, reportToJson(report));
}
