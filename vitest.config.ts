import { defineConfig } from 'vitest/config';

// Integration tests start real daemons, registries, runc and CNI: separate processes, generous timeouts,
// and no more parallel files than the 2-core machines we run on can carry.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    setupFiles: ['test/setup.ts'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});
