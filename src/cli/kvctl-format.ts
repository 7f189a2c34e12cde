/**
 * Output formatting of kvctl: bytes in JSON, sizes, durations, tables. Pure functions.
 */

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The bytes as text if they are valid UTF-8, else undefined. */
export function utf8OrUndefined(bytes: Uint8Array): string | undefined {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return undefined;
  }
}

/**
 * A bytes field for JSON output: `{ [name]: text }` when the bytes are valid UTF-8, else
 * `{ [name + 'Base64']: base64 }`. Documented in docs/client.md.
 */
export function bytesField(name: string, bytes: Uint8Array): Record<string, string> {
  const text = utf8OrUndefined(bytes);
  return text === undefined ? { [`${name}Base64`]: Buffer.from(bytes).toString('base64') } : { [name]: text };
}

/** One JSON document on one line. */
export function jsonLine(value: unknown): string {
  return `${JSON.stringify(value)}\n`;
}

/** 1536 -> "1.5 KiB". */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** 3723.4 s -> "1h2m3s"; 4.2 s -> "4.2s"; 0.25 s -> "250ms". */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  if (seconds < 1) return `${Math.round(seconds * 1000)}ms`;
  if (seconds < 60) return `${Number(seconds.toFixed(1))}s`;
  let rest = Math.floor(seconds);
  const days = Math.floor(rest / 86_400);
  rest -= days * 86_400;
  const hours = Math.floor(rest / 3600);
  rest -= hours * 3600;
  const minutes = Math.floor(rest / 60);
  const secs = rest - minutes * 60;
  const parts = [days > 0 ? `${days}d` : '', hours > 0 ? `${hours}h` : '', minutes > 0 ? `${minutes}m` : '', `${secs}s`];
  return parts.filter((part) => part !== '').join('');
}

/** "12s ago" relative to `now`, or "never". */
export function formatAgo(date: Date | undefined, now: Date): string {
  if (date === undefined) return 'never';
  const seconds = (now.getTime() - date.getTime()) / 1000;
  return seconds < 0 ? 'just now' : `${formatDuration(seconds)} ago`;
}

/** Left-aligned columns separated by two spaces; trailing spaces trimmed. */
export function formatTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((cell, column) => cell.padEnd(widths[column] ?? 0))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}

/** A value for the terminal: raw bytes, plus a newline only when writing to a terminal. */
export function rawOutput(bytes: Uint8Array, isTTY: boolean | undefined): Uint8Array {
  return isTTY === true ? Buffer.concat([bytes, Buffer.from('\n')]) : bytes;
}
