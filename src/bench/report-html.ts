/**
 * `--html report.html`: a self-contained page (inline CSS and SVG, no script, no external
 * resource; each SVG carries its own presentation attributes, so it also renders on its own) with the summary, throughput over time, mean latency over time, and the HDR-style
 * latency percentile curve (x: percentile on a log scale of 1/(1-p)).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { formatCount } from './progress-bar.js';
import type { BenchReport, OpReport } from './report.js';
import { formatReport, opTableHeader, opTableRow } from './report-text.js';

const chartWidth = 760;
const chartHeight = 300;
const margin = { left: 64, right: 40, top: 28, bottom: 44 };
/** Tick marks of a linear axis, roughly. */
const ticksTarget = 6;

export const opColors: Record<string, string> = { get: '#1f77b4', put: '#ff7f0e', delete: '#2ca02c', total: '#444444', errors: '#d62728' };

export interface ChartSeries {
  name: string;
  color: string;
  points: readonly (readonly [number, number])[];
  dashed?: boolean;
}

export interface ChartAxis {
  min: number;
  max: number;
  ticks: readonly { value: number; label: string }[];
  title: string;
}

export function escapeHtml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** A "nice" tick step (1, 2 or 5 times a power of ten) for a range. */
export function niceStep(range: number, target = ticksTarget): number {
  if (!(range > 0)) return 1;
  const raw = range / target;
  const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
  const normalized = raw / magnitude;
  const nice = normalized <= 1 ? 1 : normalized <= 2 ? 2 : normalized <= 5 ? 5 : 10;
  return nice * magnitude;
}

/** A tick label with as many decimals as the step needs: 0.25 -> "0.25", 2000 -> "2,000". */
export function tickLabel(value: number, step: number): string {
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  return decimals === 0 ? formatCount(value) : value.toFixed(decimals);
}

/** A linear axis from 0 to just above `max`, with nice ticks. */
export function linearAxis(max: number, title: string): ChartAxis {
  const step = niceStep(max > 0 ? max : 1);
  const top = Math.max(step, Math.ceil((max > 0 ? max : 1) / step - 1e-9) * step);
  const ticks = [];
  for (let i = 0; i * step <= top + step / 2; i++) ticks.push({ value: i * step, label: tickLabel(i * step, step) });
  return { min: 0, max: top, ticks, title };
}

/** The x position of percentile p (0..100) on the HDR axis: log10(1 / (1 - p)). */
export function percentileX(percentile: number, count: number): number {
  const tail = 1 - percentile / 100;
  const cap = Math.log10(Math.max(1, count));
  return tail <= 0 ? cap : Math.min(cap, Math.log10(1 / tail));
}

/** "0%", "90%", "99%", "99.9%", ... for decade d of 1/(1-p). */
export function percentileLabel(decade: number): string {
  if (decade === 0) return '0%';
  return `${(100 - Math.pow(10, 2 - decade)).toFixed(Math.max(0, decade - 2))}%`;
}

export function lineChart(title: string, x: ChartAxis, y: ChartAxis, series: readonly ChartSeries[]): string {
  const plotWidth = chartWidth - margin.left - margin.right;
  const plotHeight = chartHeight - margin.top - margin.bottom;
  const sx = (value: number): number => margin.left + ((value - x.min) / (x.max - x.min || 1)) * plotWidth;
  const sy = (value: number): number => margin.top + plotHeight - ((value - y.min) / (y.max - y.min || 1)) * plotHeight;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${chartWidth}" height="${chartHeight}" viewBox="0 0 ${chartWidth} ${chartHeight}" font-family="system-ui, sans-serif" role="img" aria-label="${escapeHtml(title)}">`);
  parts.push(`<text x="${margin.left}" y="18" font-size="14" font-weight="600" fill="#222">${escapeHtml(title)}</text>`);
  for (const tick of y.ticks) {
    const ty = sy(tick.value).toFixed(1);
    parts.push(`<line x1="${margin.left}" x2="${chartWidth - margin.right}" y1="${ty}" y2="${ty}" stroke="#e4e4e4" stroke-width="1"/>`);
    parts.push(`<text x="${margin.left - 6}" y="${ty}" font-size="11" fill="#555" text-anchor="end" dominant-baseline="middle">${escapeHtml(tick.label)}</text>`);
  }
  for (const tick of x.ticks) {
    const tx = sx(tick.value).toFixed(1);
    parts.push(`<line x1="${tx}" x2="${tx}" y1="${margin.top}" y2="${margin.top + plotHeight}" stroke="#e4e4e4" stroke-width="1"/>`);
    parts.push(`<text x="${tx}" y="${margin.top + plotHeight + 16}" font-size="11" fill="#555" text-anchor="middle">${escapeHtml(tick.label)}</text>`);
  }
  parts.push(`<rect x="${margin.left}" y="${margin.top}" width="${plotWidth}" height="${plotHeight}" fill="none" stroke="#999"/>`);
  parts.push(`<text x="${margin.left + plotWidth / 2}" y="${chartHeight - 6}" font-size="12" fill="#333" text-anchor="middle">${escapeHtml(x.title)}</text>`);
  parts.push(`<text transform="translate(14 ${margin.top + plotHeight / 2}) rotate(-90)" font-size="12" fill="#333" text-anchor="middle">${escapeHtml(y.title)}</text>`);
  series.forEach((line, index) => {
    if (line.points.length === 0) return;
    const path = line.points.map(([px, py], i) => `${i === 0 ? 'M' : 'L'}${sx(px).toFixed(1)},${sy(py).toFixed(1)}`).join(' ');
    parts.push(`<path d="${path}" fill="none" stroke="${line.color}" stroke-width="2"${line.dashed === true ? ' stroke-dasharray="5 4"' : ''}/>`);
    if (line.points.length === 1) {
      const [px, py] = line.points[0]!;
      parts.push(`<circle cx="${sx(px).toFixed(1)}" cy="${sy(py).toFixed(1)}" r="3" fill="${line.color}"/>`);
    }
    const lx = margin.left + 10 + index * 110;
    parts.push(`<rect x="${lx}" y="${margin.top + 6}" width="12" height="4" fill="${line.color}"/>`);
    parts.push(`<text x="${lx + 16}" y="${margin.top + 12}" font-size="12" fill="#333">${escapeHtml(line.name)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n');
}

function throughputChart(report: BenchReport): string {
  const points = report.timeSeries;
  const x = linearAxis(Math.max(1, report.measured.seconds), 'seconds since the measured phase began');
  const mid = (second: number): number => Math.min(report.measured.seconds, second + 0.5);
  const series: ChartSeries[] = [];
  if (report.operations.length > 1) {
    series.push({ name: 'total', color: opColors['total']!, points: points.map((p) => [mid(p.second), p.opsPerSecond] as const) });
  }
  for (const op of report.operations) {
    const name = op.op;
    series.push({ name, color: opColors[name]!, points: points.map((p) => [mid(p.second), p.byOp[name as keyof typeof p.byOp] ?? 0] as const) });
  }
  if (points.some((p) => p.errorsPerSecond > 0)) {
    series.push({ name: 'errors', color: opColors['errors']!, points: points.map((p) => [mid(p.second), p.errorsPerSecond] as const), dashed: true });
  }
  const yMax = Math.max(1, ...series.flatMap((s) => s.points.map(([, value]) => value)));
  return lineChart('Throughput (successful operations per second)', x, linearAxis(yMax, 'ops/s'), series);
}

function meanLatencyChart(report: BenchReport): string {
  const points = report.timeSeries.filter((p) => p.opsPerSecond > 0);
  const x = linearAxis(Math.max(1, report.measured.seconds), 'seconds since the measured phase began');
  const series: ChartSeries[] = [
    { name: 'mean', color: opColors['total']!, points: points.map((p) => [Math.min(report.measured.seconds, p.second + 0.5), p.meanLatencyMs] as const) },
  ];
  const yMax = Math.max(0.001, ...points.map((p) => p.meanLatencyMs));
  return lineChart('Mean latency per second (all operations)', x, linearAxis(yMax, 'ms'), series);
}

function percentileChart(report: BenchReport): string {
  const ops: OpReport[] = report.operations.length > 0 ? report.operations : [report.total];
  const count = Math.max(1, ...ops.map((op) => op.count));
  const decades = Math.max(1, Math.ceil(Math.log10(count) - 1e-9));
  const x: ChartAxis = {
    min: 0,
    max: decades,
    ticks: Array.from({ length: decades + 1 }, (_, d) => ({ value: d, label: percentileLabel(d) })),
    title: 'percentile (log scale of 1/(1-p))',
  };
  const series: ChartSeries[] = ops.map((op) => ({
    name: op.op,
    color: opColors[op.op] ?? '#444444',
    points: op.percentileCurve.map((point) => [percentileX(point.percentile, op.count), point.latencyMs] as const),
  }));
  const yMax = Math.max(0.001, ...ops.map((op) => op.latency.maxMs));
  return lineChart('Latency by percentile', x, linearAxis(yMax, 'ms'), series);
}

function opTable(report: BenchReport): string {
  const rows = report.operations.map(opTableRow);
  if (report.operations.length > 1) rows.push(opTableRow(report.total));
  const head = opTableHeader.map((title) => `<th>${escapeHtml(title)}</th>`).join('');
  const body = rows.map((row) => `<tr>${row.map((cell) => `<td>${escapeHtml(cell)}</td>`).join('')}</tr>`).join('\n');
  return `<table><thead><tr>${head}</tr></thead><tbody>\n${body}\n</tbody></table>`;
}

export function renderHtmlReport(report: BenchReport): string {
  const title = `kvstore bench: ${report.options.workload}, concurrency ${report.options.concurrency}, ${formatCount(report.measured.opsPerSecond)} ops/s`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${escapeHtml(title)}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; max-width: 980px; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
table { border-collapse: collapse; } th, td { padding: 3px 10px; text-align: right; border-bottom: 1px solid #ddd; }
th:first-child, td:first-child { text-align: left; }
pre { background: #f6f6f6; padding: 10px; overflow-x: auto; font-size: 12px; }
svg { display: block; margin: 8px 0 16px; }
</style>
</head>
<body>
<h1>${escapeHtml(title)}</h1>
<p>${escapeHtml(report.createdAt)} on ${escapeHtml(report.machine.hostname)} (${report.machine.cpuCount} × ${escapeHtml(report.machine.cpuModel)}, node ${escapeHtml(report.machine.nodeVersion)})</p>
<h2>Operations</h2>
${opTable(report)}
<h2>Charts</h2>
${throughputChart(report)}
${percentileChart(report)}
${meanLatencyChart(report)}
<h2>Report</h2>
<pre>${escapeHtml(formatReport(report))}</pre>
</body>
</html>
`;
}

/** Writes the HTML report to `path`, creating its directory if needed. */
export function writeHtmlReport(path: string, report: BenchReport): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, renderHtmlReport(report));
}
