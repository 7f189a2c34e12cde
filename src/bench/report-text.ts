/**
 * The human-readable report printed at the end of `kvctl bench`: what ran, a table per operation
 * type, errors by status code, CPU and disk-write figures and notes.
 */
import { formatBytes, type DiskWrites } from './disk-io.js';
import { formatCount, formatSeconds } from './progress-bar.js';
import type { BenchReport, OpReport } from './report.js';

const microsPerSecond = 1_000_000;

/** Latency in ms with about 3-4 significant digits. */
export function formatMs(ms: number): string {
  if (ms === 0) return '0';
  if (ms < 10) return ms.toFixed(3);
  if (ms < 100) return ms.toFixed(2);
  return ms.toFixed(1);
}

/** The first `leftColumns` columns left-aligned (names), the rest right-aligned (numbers). */
export function formatTable(header: readonly string[], rows: readonly (readonly string[])[], leftColumns = 1): string {
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((cell, column) => (column < leftColumns ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}

export const opTableHeader = ['OP', 'COUNT', 'OPS/S', 'ERRORS', 'P50 MS', 'P95 MS', 'P99 MS', 'P99.9 MS', 'MAX MS'] as const;

export function opTableRow(op: OpReport): string[] {
  return [
    op.op,
    formatCount(op.count),
    formatCount(op.opsPerSecond),
    formatCount(op.errors),
    formatMs(op.latency.p50Ms),
    formatMs(op.latency.p95Ms),
    formatMs(op.latency.p99Ms),
    formatMs(op.latency.p999Ms),
    formatMs(op.latency.maxMs),
  ];
}

function percent(fraction: number): string {
  return `${(fraction * 100).toFixed(0)}%`;
}

function cpuSeconds(micros: number): string {
  return `${(micros / microsPerSecond).toFixed(2)} s`;
}

/** "get 90%, put 10%". */
export function describeMix(report: BenchReport): string {
  return Object.entries(report.mix)
    .filter(([, share]) => share > 0)
    .map(([op, share]) => `${op} ${+(share * 100).toFixed(2)}%`)
    .join(', ');
}

/** Per-op figure: "3.8", or "0.02" when small. */
function perOp(value: number): string {
  return value !== 0 && Math.abs(value) < 0.1 ? value.toFixed(2) : value.toFixed(1);
}

/**
 * The `disk:` line: "disk: 12,345 write I/Os (3.8 per op, 6,172/s), 51.2 MiB written (4.2 KiB
 * per op), 2,345 flushes (0.7 per op) on vda — the whole device: other processes' writes count too".
 */
export function formatDisk(disk: DiskWrites): string {
  const flushes = disk.flushes === null || disk.flushesPerOp === null ? '' : `, ${formatCount(disk.flushes)} flushes (${perOp(disk.flushesPerOp)} per op)`;
  return (
    `disk: ${formatCount(disk.writes)} write I/Os (${perOp(disk.writesPerOp)} per op, ${formatCount(disk.writesPerSecond)}/s), ` +
    `${formatBytes(disk.bytesWritten)} written (${formatBytes(disk.bytesPerOp)} per op)${flushes} on ${disk.device} — the whole device: other processes' writes count too`
  );
}

function formatDiskLine(report: BenchReport): string {
  if (report.disk !== null) return formatDisk(report.disk);
  return report.target.kind === 'local-cluster' ? 'disk: unavailable (see notes)' : 'disk: not measured (only with --local-cluster, whose data dir is known)';
}

export function formatReport(report: BenchReport): string {
  const { options } = report;
  const lines: string[] = [];
  const distribution = options.distribution === 'zipfian' ? `zipfian (skew ${options.zipfSkew})` : 'uniform';
  lines.push(
    `workload ${options.workload} (${describeMix(report)}), ${distribution} over ${formatCount(options.keys)} keys, ` +
      `${formatCount(options.valueBytes)}-byte values, consistency ${options.consistency ?? 'node default'}`,
  );
  const where =
    report.target.kind === 'local-cluster'
      ? `local cluster of ${report.target.nodes} node${report.target.nodes === 1 ? '' : 's'} (replication factor ${report.target.replicationFactor ?? '?'})`
      : `${report.target.nodes} endpoint${report.target.nodes === 1 ? '' : 's'}`;
  lines.push(`target ${where}: ${report.target.endpoints.join(', ')}`);
  lines.push(
    `load: concurrency ${options.concurrency}, ${options.connections} connection${options.connections === 1 ? '' : 's'}, ` +
      `${options.threads} thread${options.threads === 1 ? '' : 's'}, ${options.client} client, seed ${options.seed}; ` +
      `warmup ${formatSeconds(report.measured.warmupSeconds)}, measured ${formatSeconds(report.measured.seconds)} (ended by ${report.measured.endedBy})`,
  );
  if (report.preload !== null) {
    lines.push(`preload: ${formatCount(report.preload.written)} keys in ${formatSeconds(report.preload.seconds)} (${formatCount(report.preload.keysPerSecond)} keys/s, ${formatCount(report.preload.errors)} errors)`);
  }
  lines.push('');
  const rows = report.operations.map(opTableRow);
  if (report.operations.length > 1) rows.push(opTableRow(report.total));
  lines.push(formatTable(opTableHeader, rows).trimEnd());
  const failing = report.operations.filter((op) => op.errors > 0);
  if (failing.length > 0) {
    lines.push('');
    lines.push('errors by status:');
    for (const op of failing) {
      lines.push(`  ${op.op}: ${Object.entries(op.errorsByCode).map(([code, count]) => `${code} ${formatCount(count)}`).join(', ')}`);
    }
    if (report.firstError !== null) lines.push(`  first error: ${report.firstError}`);
  }
  lines.push('');
  const { client, server } = report.cpu;
  lines.push('cpu:');
  lines.push(
    `  load generator: ${cpuSeconds(client.totalMicros)} over ${formatSeconds(client.wallMicros / microsPerSecond)} = ${client.cores.toFixed(2)} cores, ` +
      `${client.microsPerOp.toFixed(1)} µs/op (event loop busy: main ${percent(client.mainEventLoopUtilization)}, ` +
      `workers ${client.workerEventLoopUtilization.map(percent).join(' ')})`,
  );
  if (server !== null) {
    const perNode = server.nodes.map((node) => `${node.label} ${node.cpuMicros === null ? 'n/a' : cpuSeconds(node.cpuMicros)}`).join(', ');
    lines.push(
      `  servers: ${cpuSeconds(server.totalMicros)} = ${server.cores.toFixed(2)} cores, ${server.microsPerOp.toFixed(1)} µs/op summed over ${server.nodes.length} node${server.nodes.length === 1 ? '' : 's'} (${perNode})`,
    );
  } else {
    lines.push('  servers: not measured (use --local-cluster, or --server-pids for local servers)');
  }
  lines.push(formatDiskLine(report));
  if (report.notes.length > 0) {
    lines.push('');
    lines.push('notes:');
    for (const note of report.notes) lines.push(`  - ${note}`);
  }
  return `${lines.join('\n')}\n`;
}
