import { expect } from 'vitest';
import { Consistency, type BatchOperation, type BatchResult } from '../../gen/kvstore/v1/kvstore.js';
import { Status } from '../../src/client/index.js';

/**
 * Builders of Batch / OperationStream operations and assertions on their results, shared by the
 * raw-protocol tests (test/integration/batch.test.ts, operation-stream.test.ts).
 */

export const bytes = (text: string): Buffer => Buffer.from(text, 'utf8');

const asBytes = (data: string | Buffer): Buffer => (typeof data === 'string' ? bytes(data) : data);

export function putOp(key: string | Buffer, value: string | Buffer, consistency = Consistency.CONSISTENCY_UNSPECIFIED): BatchOperation {
  return { put: { key: asBytes(key), value: asBytes(value), consistency } };
}

export function getOp(key: string | Buffer, consistency = Consistency.CONSISTENCY_UNSPECIFIED): BatchOperation {
  return { get: { key: asBytes(key), consistency } };
}

export function deleteOp(key: string | Buffer, consistency = Consistency.CONSISTENCY_UNSPECIFIED): BatchOperation {
  return { delete: { key: asBytes(key), consistency } };
}

/** The result kinds that are set, so a result with the wrong (or several) kinds fails readably. */
export function kindsOf(result: BatchResult | undefined): string[] {
  if (result === undefined) return ['<missing>'];
  return (['put', 'get', 'delete', 'error'] as const).filter((kind) => result[kind] !== undefined);
}

/** A result, readable in assertion messages (values as UTF-8, shortened). */
export function show(result: unknown): string {
  return JSON.stringify(result, (_key, value: unknown) => {
    if (value !== null && typeof value === 'object' && (value as { type?: unknown }).type === 'Buffer') {
      const text = Buffer.from((value as { data: number[] }).data).toString('utf8');
      return text.length > 40 ? `<${text.length} bytes>` : text;
    }
    return value;
  });
}

export function expectPut(result: BatchResult | undefined, found: boolean, oldValue = ''): void {
  expect(kindsOf(result), show(result)).toEqual(['put']);
  expect(result!.put!.found, show(result)).toBe(found);
  expect(result!.put!.value.toString('utf8'), show(result)).toBe(oldValue);
}

export function expectGet(result: BatchResult | undefined, found: boolean, value = ''): void {
  expect(kindsOf(result), show(result)).toEqual(['get']);
  expect(result!.get!.found, show(result)).toBe(found);
  expect(result!.get!.value.toString('utf8'), show(result)).toBe(value);
}

export function expectDelete(result: BatchResult | undefined, found: boolean): void {
  expect(kindsOf(result), show(result)).toEqual(['delete']);
  expect(result!.delete!.found, show(result)).toBe(found);
}

/** The operation failed with `code` and a message containing every one of `mentions`. */
export function expectError(result: BatchResult | undefined, code: Status, ...mentions: string[]): void {
  expect(kindsOf(result), show(result)).toEqual(['error']);
  expect(Status[result!.error!.code], show(result)).toBe(Status[code]);
  for (const mention of mentions) expect(result!.error!.message, show(result)).toContain(mention);
}

/** The operation failed with INVALID_ARGUMENT and a message containing every one of `mentions`. */
export function expectInvalid(result: BatchResult | undefined, ...mentions: string[]): void {
  expectError(result, Status.INVALID_ARGUMENT, ...mentions);
}
