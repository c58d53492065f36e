import { join } from "node:path";
import { type Duration, RemovalPolicy } from "aws-cdk-lib";
import { Architecture, Runtime, Tracing } from "aws-cdk-lib/aws-lambda";
import { NodejsFunction, OutputFormat } from "aws-cdk-lib/aws-lambda-nodejs";
import { LogGroup, type RetentionDays } from "aws-cdk-lib/aws-logs";
import type { Construct } from "constructs";
import type { PLATFORM_ENV } from "../functions/wiring/env.ts";
import type { ApplicationChoice } from "./application.ts";
import {
  applicationAlias,
  bundling,
  cryptoWasmCommands,
  runtimeFileCommands,
  runtimeFilesOf,
} from "./bundling.ts";

/** The project's root: the functions' entries are relative to it, and esbuild runs there. */
export const PROJECT_ROOT = join(import.meta.dirname, "..");

/** Every function's memory but the application function's: each measured far below it. */
export const FUNCTION_MEMORY_MB = 256;

export interface AppserviceFunctionProps {
  /** Its entry, relative to the project's root. */
  entry: string;
  timeout: Duration;
  environment: Record<string, string>;
  logRetention: RetentionDays;
  tracing: boolean;
  /** @default FUNCTION_MEMORY_MB */
  memorySize?: number;
  reservedConcurrentExecutions?: number;
  /** The application whose part it runs; none for the deploy-time tokens function. */
  application?: ApplicationChoice;
  /**
   * Copies crypto-wasm's WebAssembly beside the bundle: for the functions that do crypto, where
   * encrypted rooms are on. @default false
   */
  cryptoWasm?: boolean;
}

/**
 * A Node.js function as every one of the stack's is made: bundled here by the local esbuild,
 * ESM, ARM64, Node 24, with a log group of its own (retention, removal) and the chosen
 * application's part alone (`#application`) and the runtime files its manifest declares.
 *
 * `name` (`events`) makes its construct id (`EventsFunction`) and its log group's (`eventsLogs`),
 * the ids deployed stacks know: the log group is made in `scope`, beside the function, where it
 * always was (its logical ID, from its path, stays).
 */
export class AppserviceFunction extends NodejsFunction {
  /** Whether crypto-wasm's 7.8 MB of WebAssembly is copied beside its bundle. */
  readonly cryptoWasm: boolean;

  constructor(
    scope: Construct,
    name: string,
    {
      entry,
      timeout,
      environment,
      logRetention,
      tracing,
      application,
      memorySize = FUNCTION_MEMORY_MB,
      reservedConcurrentExecutions,
      cryptoWasm = false,
    }: AppserviceFunctionProps,
  ) {
    super(scope, `${name[0]?.toUpperCase()}${name.slice(1)}Function`, {
      entry: join(PROJECT_ROOT, entry),
      handler: "handler",
      projectRoot: PROJECT_ROOT,
      depsLockFilePath: join(PROJECT_ROOT, "package-lock.json"),
      // Node 22's support ends in April 2027; the code runs on Node 20-24 (local mode, tests).
      runtime: Runtime.NODEJS_24_X,
      architecture: Architecture.ARM_64,
      memorySize,
      ...(reservedConcurrentExecutions !== undefined && { reservedConcurrentExecutions }),
      timeout,
      ...(tracing && { tracing: Tracing.ACTIVE }),
      environment: {
        // Stack traces through the source maps.
        ...({
          NODE_OPTIONS: "--enable-source-maps",
          POWERTOOLS_LOG_LEVEL: "INFO",
        } satisfies Record<(typeof PLATFORM_ENV)[number], string>),
        ...environment,
      },
      logGroup: new LogGroup(scope, `${name}Logs`, {
        retention: logRetention,
        removalPolicy: RemovalPolicy.DESTROY,
      }),
      bundling: {
        format: OutputFormat.ESM,
        target: bundling.target,
        minify: bundling.minify,
        sourceMap: bundling.sourceMap,
        mainFields: [...bundling.mainFields],
        banner: bundling.banner,
        // The chosen application's manifest module as `#application`: its part alone.
        ...(application && {
          esbuildArgs: Object.fromEntries(
            Object.entries(applicationAlias(application.name)).map(([key, path]) => [
              `--alias:${key}`,
              path,
            ]),
          ),
        }),
        // Bundle the AWS SDK too: the version our tests ran, tree-shaken.
        externalModules: [],
        commandHooks: {
          beforeBundling: () => [],
          beforeInstall: () => [],
          afterBundling: (inputDir, outputDir) => [
            ...(application
              ? runtimeFileCommands(
                  runtimeFilesOf(application.name, application.module.manifest, name),
                  inputDir,
                  outputDir,
                )
              : []),
            ...(cryptoWasm ? cryptoWasmCommands(inputDir, outputDir) : []),
          ],
        },
      },
    });
    this.cryptoWasm = cryptoWasm;
  }
}
