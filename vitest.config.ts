import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/support/global-setup.ts"],
    reporters: ["default", "./test/support/summary-reporter.ts"],
    // Integration tests start Java and servers: one file at a time suits a 2-core machine.
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 90_000,
    env: {
      // No SDK call may leave the machine: dummy credentials, no instance metadata.
      AWS_ACCESS_KEY_ID: "test",
      AWS_SECRET_ACCESS_KEY: "test",
      AWS_REGION: "us-east-1",
      AWS_EC2_METADATA_DISABLED: "true",
      POWERTOOLS_LOG_LEVEL: "SILENT",
    },
  },
});
