import { readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { defineConfig } from "vitest/config";
import { BaseSequencer, type TestSpecification } from "vitest/node";

// The SDK's 9-line warning that it will need Node.js 22, from this process (the global setups),
// every test worker and every npm start's threads: the README says it (Set-up), npm start in one
// line. Set here, not in `test.env`, so that the global setups see it too.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";

/** The stack's tests: they share the run's `cdk synth`s (test/support/cdk-synth.ts), which bundle every function. */
const infraTests = ["test/unit/infra.test.ts", "test/unit/bundles.test.ts"];
/**
 * The integration tests that spawn `npm start` (local-services: `npm run local-services`, its
 * emulators alone) and wait on it: its start, its signals, its restarts. `npm run test:fast`
 * leaves them out (`NPM_START_TESTS=skip`), `npm run test:npm-start` runs them alone (`only`).
 */
const npmStartTests = [
  "test/integration/crypto-echo.test.ts",
  // Its cases in four files, which run side by side: one file of them all took the longest.
  "test/integration/local-mode*.test.ts",
  "test/integration/local-services.test.ts",
  "test/integration/npm-start-defaults.test.ts",
  "test/integration/operator-console-browser.test.ts",
  "test/integration/relay-npm-start.test.ts",
  "test/integration/webhooks-npm-start.test.ts",
];
const npmStartTestsChoice = process.env.NPM_START_TESTS;
if (npmStartTestsChoice !== undefined && !["skip", "only"].includes(npmStartTestsChoice)) {
  throw new Error(`NPM_START_TESTS=${npmStartTestsChoice}: "skip" or "only", or unset for both`);
}

/**
 * Each file's duration in a full run (`project:path` → ms), committed: a fresh clone (CI) has no
 * vitest cache, and without it the longest files started last and ran on alone (a 62 s npm start
 * file among the last: 370 s instead of 333 s). `npm run test:durations` writes it again from the
 * cache of the last run.
 */
const committedDurations = (root: string): Record<string, number> =>
  JSON.parse(readFileSync(join(root, "test", "durations.json"), "utf8"));

/** The stack's tests' project: they wait for the run's `cdk synth`s. */
const INFRA = "infra";

/**
 * One queue for every project's files: files no run has timed first, the largest first; then the
 * longest the last run took (or `test/durations.json` says) first, so that the longest files
 * (npm-start ones) do not start last and run on alone, and the many short ones fill the end;
 * the stack's tests last, once the `cdk synth`s have had the run's idle CPU.
 */
class LongestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]) {
    const { cache, config } = this.ctx;
    const committed = committedDurations(config.root);
    const weight = (spec: TestSpecification) => {
      const key = `${spec.project.name}:${relative(config.root, spec.moduleId)}`;
      const duration = cache.getFileTestResults(key)?.duration ?? committed[key];
      return duration === undefined
        ? { seen: 0, size: cache.getFileStats(key)?.size ?? 0 }
        : { seen: 1, size: duration };
    };
    const weights = new Map(files.map((spec) => [spec, weight(spec)]));
    const last = (spec: TestSpecification) => (spec.project.name === INFRA ? 1 : 0);
    return [...files].sort((a, b) => {
      const order = last(a) - last(b);
      if (order !== 0) return order;
      const [wa, wb] = [weights.get(a), weights.get(b)] as [
        ReturnType<typeof weight>,
        ReturnType<typeof weight>,
      ];
      return wa.seen - wb.seen || wb.size - wa.size;
    });
  }
}

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
    // Four test files at a time across the projects, whatever the cores (vitest's default is one
    // fewer than them). Many integration files wait (on a visibility timeout, a backoff, a child
    // process): measured on 2 quiet cores, the integration project alone took 148 s with two at
    // a time and 96 s with four (CPU 35 % busy with two).
    maxWorkers: 4,
    // The longest files first across the projects, not project by project.
    sequence: { sequencer: LongestFirst },
    // Each test file's tempDir() folders are removed after it.
    setupFiles: ["test/support/clean-temp-dirs.ts"],
    // Side by side, in one group: the run is CPU-bound on 2 cores, and groups run one after the
    // other left the CPU idle at each one's end. The integration tests start servers and time
    // retries, and often wait (on a visibility timeout, a backoff, a child process); each file
    // uses tables, queues and ports of its own, and stops what it starts.
    projects: [
      {
        extends: true,
        test: {
          name: "unit",
          include: ["test/unit/**/*.test.ts"],
          exclude: infraTests,
          // Workers kept from file to file, as the integration tests': measured on 2 quiet
          // cores, the unit project took 50 s of CPU (27 s) isolated and 29 s (16 s) not.
          isolate: false,
        },
      },
      {
        extends: true,
        test: {
          // The npm-start files with the others, in one project: its workers, its transforms and
          // its one DynamoDB Local serve both (two projects had twice each: ~20 s of CPU).
          name: "integration",
          include:
            npmStartTestsChoice === "only" ? npmStartTests : ["test/integration/**/*.test.ts"],
          exclude: npmStartTestsChoice === "skip" ? npmStartTests : [],
          globalSetup: ["test/support/global-setup.ts"],
          // Workers kept from file to file: the SDK, fauxqs and the handlers load and warm up
          // once a worker, not once a file.
          isolate: false,
        },
      },
      {
        extends: true,
        test: {
          name: INFRA,
          include: infraTests,
          globalSetup: ["test/support/cdk-synth.ts"],
        },
      },
    ],
  },
});
