import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    // Cluster tests start real node processes; give them room, but every wait inside a test has
    // its own deadline, so a hang fails with a message rather than at this limit.
    testTimeout: 120_000,
    hookTimeout: 60_000,
    // Two cores: files run in parallel by default; cluster files spawn several processes each.
    fileParallelism: true,
    maxWorkers: 2,
  },
});
