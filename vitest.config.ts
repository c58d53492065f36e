import { defineConfig } from "vitest/config";

// The SDK's 9-line warning that it will need Node.js 22, from this process (the global setups),
// every test worker and every npm start's threads: the README says it (Set-up), npm start in one
// line. Set here, not in `test.env`, so that the global setups see it too.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";

/** The stack's tests: they share the run's `cdk synth`s (test/support/cdk-synth.ts), which bundle every function. */
const infraTests = ["test/unit/infra.test.ts", "test/unit/bundles.test.ts"];

export default defineConfig({
  test: {
    reporters: ["default", "./test/support/summary-reporter.ts"],
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
    // Run one after the other (groupOrder): the unit tests two files at a time, then the
    // integration tests one file at a time (they start servers and time retries: a 2-core
    // machine runs one well), then the stack's, whose `cdk synth` ran meanwhile.
    projects: [
      {
        extends: true,
        test: {
          name: "unit",
          include: ["test/unit/**/*.test.ts"],
          exclude: infraTests,
          maxWorkers: 2,
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          globalSetup: ["test/support/global-setup.ts"],
          fileParallelism: false,
          // One worker for them all: the SDK, fauxqs and the handlers load and warm up once,
          // not once a file. Each file stops what it starts.
          isolate: false,
          sequence: { groupOrder: 1 },
        },
      },
      {
        extends: true,
        test: {
          name: "infra",
          include: infraTests,
          globalSetup: ["test/support/cdk-synth.ts"],
          maxWorkers: 2,
          sequence: { groupOrder: 2 },
        },
      },
    ],
  },
});
