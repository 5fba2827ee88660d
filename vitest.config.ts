import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Integration tests start real servers on port 0; files run in parallel forks.
    pool: 'forks',
    // The CLI tests spawn bin/portcullis.js, which runs dist/: built once here (scripts/build.ts).
    globalSetup: ['test/helpers/build-dist.ts'],
  },
});
