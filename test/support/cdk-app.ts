import { App } from "aws-cdk-lib";
import { tempDirSync } from "./temp-dirs.ts";

/**
 * A CDK app that bundles no function (the run's one `cdk synth` does, test/support/cdk-synth.ts),
 * for tests that look at a stack's template or environment. Its assembly goes to a folder removed
 * after the test file: without an `outdir`, each synthesis leaves a `cdk.out*` folder in /tmp.
 */
export const unbundledApp = () =>
  new App({
    outdir: tempDirSync("cdk.out-"),
    context: { "aws:cdk:bundling-stacks": [] },
    // CDK's own template validation starts a WebAssembly engine, ~4 s of CPU in each process
    // (measured: a first synth 7.9 s of CPU with it, 1.6 s without): the run's `cdk synth`s
    // keep it, and cfn-lint checks their templates and infra.test's variants.
    builtinCloudFormationValidation: false,
  });
