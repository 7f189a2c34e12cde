/**
 * Latency histograms: HdrHistogram (hdr-histogram-js, its pure-JS build: no WebAssembly to
 * initialise, ~100 ns per record) at microsecond resolution with 3 significant digits, so every
 * percentile is within 0.1% of the true value. Worker threads send theirs to the main thread in
 * HdrHistogram's compressed base64 encoding, and the main thread adds them up.
 */
import { build, decodeFromCompressedBase64, encodeIntoCompressedBase64, type Histogram } from 'hdr-histogram-js';

/** One microsecond: the resolution of every latency we record. */
export const latencyUsMin = 1;
/** Ten minutes: longer than any call deadline kvctl allows to be useful; larger values are clamped. */
export const latencyUsMax = 10 * 60 * 1_000_000;
/** Relative precision 10^-3 at every magnitude. */
export const significantDigits = 3;
const microsPerMilli = 1000;

export type { Histogram };

/** An empty latency histogram in microseconds. */
export function createLatencyHistogram(): Histogram {
  return build({
    bitBucketSize: 32,
    autoResize: false,
    lowestDiscernibleValue: latencyUsMin,
    highestTrackableValue: latencyUsMax,
    numberOfSignificantValueDigits: significantDigits,
    useWebAssembly: false,
  });
}

/** Records one latency, rounded to the microsecond and clamped to the trackable range. */
export function recordLatencyUs(histogram: Histogram, micros: number): void {
  const value = Math.round(micros);
  histogram.recordValue(value < latencyUsMin ? latencyUsMin : value > latencyUsMax ? latencyUsMax : value);
}

/** HdrHistogram's compressed base64 form (what `HistogramLogReader` and the HDR tools read). */
export function encodeHistogram(histogram: Histogram): string {
  return encodeIntoCompressedBase64(histogram);
}

export function decodeHistogram(encoded: string): Histogram {
  return decodeFromCompressedBase64(encoded, 32, false);
}

/** The sum of several histograms (e.g. one per worker thread) as a new latency histogram. */
export function mergeHistograms(parts: readonly Histogram[]): Histogram {
  const total = createLatencyHistogram();
  for (const part of parts) total.add(part);
  return total;
}

/** The figures of a latency distribution, in milliseconds (0 when nothing was recorded). */
export interface LatencySummary {
  count: number;
  minMs: number;
  meanMs: number;
  stddevMs: number;
  p50Ms: number;
  p90Ms: number;
  p95Ms: number;
  p99Ms: number;
  p999Ms: number;
  p9999Ms: number;
  maxMs: number;
}

const toMs = (micros: number): number => micros / microsPerMilli;

export function summarizeLatency(histogram: Histogram): LatencySummary {
  const count = histogram.totalCount;
  if (count === 0) {
    return { count: 0, minMs: 0, meanMs: 0, stddevMs: 0, p50Ms: 0, p90Ms: 0, p95Ms: 0, p99Ms: 0, p999Ms: 0, p9999Ms: 0, maxMs: 0 };
  }
  const at = (percentile: number): number => toMs(histogram.getValueAtPercentile(percentile));
  return {
    count,
    minMs: toMs(histogram.minNonZeroValue),
    meanMs: toMs(histogram.mean),
    stddevMs: toMs(histogram.stdDeviation),
    p50Ms: at(50),
    p90Ms: at(90),
    p95Ms: at(95),
    p99Ms: at(99),
    p999Ms: at(99.9),
    p9999Ms: at(99.99),
    maxMs: toMs(histogram.maxValue),
  };
}

/** One point of a percentile curve. */
export interface CurvePoint {
  /** Percentile, 0..100. */
  percentile: number;
  latencyMs: number;
}

/** Points per decade of 1/(1-p): 10 gives 0%, 20.6%, 36.9%, ..., 90%, ..., 99%, ... */
export const curvePointsPerDecade = 10;

/**
 * The latency percentile curve of an HDR plot: points at p = 1 - 10^(-k/pointsPerDecade) for
 * k = 0, 1, 2, ... while 1/(1-p) <= count (beyond that the data says nothing more), then the
 * maximum at 100%.
 */
export function percentileCurve(histogram: Histogram, pointsPerDecade = curvePointsPerDecade): CurvePoint[] {
  const count = histogram.totalCount;
  if (count === 0) return [];
  const points: CurvePoint[] = [];
  for (let k = 0; ; k++) {
    const tail = Math.pow(10, -k / pointsPerDecade);
    if (1 / tail > count * (1 + 1e-9)) break;
    const percentile = (1 - tail) * 100;
    points.push({ percentile, latencyMs: toMs(histogram.getValueAtPercentile(percentile)) });
  }
  points.push({ percentile: 100, latencyMs: toMs(histogram.maxValue) });
  return points;
}
