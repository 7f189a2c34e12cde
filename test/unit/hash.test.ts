import { describe, expect, it } from 'vitest';
import { murmur3x86_32 } from '../../src/cluster/hash.js';

const ascii = (s: string): Uint8Array => new TextEncoder().encode(s);
const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s, 'hex'));

describe('murmur3x86_32', () => {
  // Vectors checked against an independent transcription of the reference C (MurmurHash3_x86_32);
  // the empty-input and "abc" ones also appear in SMHasher-derived test suites.
  it.each([
    ['', 0, 0x00000000],
    ['', 1, 0x514e28b7],
    ['', 0xffffffff, 0x81f16f39],
    ['a', 0, 0x3c2569b2],
    ['ab', 0, 0x9bbfd75f],
    ['abc', 0, 0xb3dd93fa],
    ['abcd', 0, 0x43ed676a],
    ['hello', 0, 0x248bfa47],
    ['hello', 42, 0xe2dbd2e1],
    ['Hello, world!', 1234, 0xfaf6cdb3],
    ['The quick brown fox jumps over the lazy dog', 0, 0x2e4ff723],
  ])('%j with seed %d', (input, seed, expected) => {
    expect(murmur3x86_32(ascii(input), seed)).toBe(expected);
  });

  it('handles high bytes and all tail lengths', () => {
    expect(murmur3x86_32(hex('fffefdfcfb'), 0x9747b28c)).toBe(0xa64651ef);
    const all = Uint8Array.from({ length: 256 }, (_, i) => i);
    expect(murmur3x86_32(all)).toBe(0xe40a0e56);
  });

  it('defaults the seed to 0 and returns an unsigned 32-bit integer', () => {
    expect(murmur3x86_32(ascii('hello'))).toBe(murmur3x86_32(ascii('hello'), 0));
    for (let i = 0; i < 1000; i++) {
      const h = murmur3x86_32(ascii(`key-${i}`));
      expect(Number.isInteger(h) && h >= 0 && h <= 0xffffffff).toBe(true);
    }
  });

  it('hashes a subarray view by its own bytes only', () => {
    const whole = ascii('xxhelloyy');
    expect(murmur3x86_32(whole.subarray(2, 7))).toBe(0x248bfa47);
    expect(murmur3x86_32(Buffer.from('hello'))).toBe(0x248bfa47);
  });
});
