import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'proto/test/**/*.test.ts', 'node-worker/test/**/*.test.ts'],
    // Datapath suites share the kernel (BPF pins, cgroups, iptables): one file at a time.
    fileParallelism: false,
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
