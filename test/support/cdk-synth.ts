import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { mkdtemp, readFile, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inject } from "vitest";
import type { TestProject } from "vitest/node";
import { waitFor } from "./wait.ts";

/**
 * The stacks the run synthesizes: cdk.json's (the webhooks), and the relay's, as
 * `cdk synth -c application=relay` makes it.
 */
const STACKS = {
  webhooks: { stackName: "MatrixAppservice", context: [] },
  relay: {
    stackName: "Relay",
    context: ["application=relay", "relayUrl=https://chat.example.org", "stackName=Relay"],
  },
} as const;
type SynthName = keyof typeof STACKS;

declare module "vitest" {
  export interface ProvidedContext {
    cdkSynth: Record<SynthName, { outDir: string; resultFile: string }>;
  }
}

const root = join(import.meta.dirname, "../..");

interface SynthResult {
  code: number | null;
  signal: string | null;
  output: string;
}

/**
 * Global setup: `cdk synth` with the CDK CLI of each of `STACKS`, once per run and in the
 * background (half a minute of CPU each) while the other tests run; one after the other, so that
 * cdk.json's, which most infra tests read, has all the idle CPU first (a run of the infra tests
 * alone waits for them). It bundles every function exactly as a deploy does; the infra tests
 * read its output through `synthesized()`.
 */
export default async function startSynths(project: TestProject) {
  const dir = await mkdtemp(join(tmpdir(), "cdk-synth-"));
  const webhooks = startSynth(project, "webhooks", dir);
  const synths = [webhooks, startSynth(project, "relay", dir, webhooks.finished)];
  project.provide(
    "cdkSynth",
    Object.fromEntries(synths.map((synth) => [synth.name, synth.paths])) as Record<
      SynthName,
      { outDir: string; resultFile: string }
    >,
  );
  // Vitest exits on SIGINT and SIGTERM without running the teardown: the synths, in process
  // groups of their own that a terminal's Ctrl-C does not reach, and their folder go then too.
  const onExit = () => {
    for (const synth of synths) synth.kill();
    rmSync(dir, { recursive: true, force: true });
  };
  process.once("exit", onExit);
  return async () => {
    process.off("exit", onExit);
    await Promise.allSettled(synths.map((synth) => synth.stop()));
    await rm(dir, { recursive: true, force: true });
  };
}

/**
 * One `cdk synth`, started once `after` has settled, its output and its result (written when it
 * ends) in `dir`.
 */
function startSynth(project: TestProject, name: SynthName, dir: string, after?: Promise<void>) {
  const outDir = join(dir, `${name}.out`);
  const resultFile = join(dir, `${name}.result.json`);
  const context = STACKS[name].context.flatMap((setting) => ["-c", setting]);
  let child: ChildProcess | undefined;
  let stopped = false;
  const run = () =>
    new Promise<void>((resolve) => {
      // At the lowest CPU priority: it takes what the integration tests leave idle, not their share.
      const synth = spawn(
        "nice",
        [
          "-n",
          "19",
          join(root, "node_modules/.bin/cdk"),
          "synth",
          "--quiet",
          ...context,
          "--output",
          outDir,
        ],
        {
          cwd: root,
          // The tests' environment (dummy credentials, no instance metadata): nothing leaves the machine.
          env: { ...process.env, ...project.config.env, CDK_DISABLE_CLI_TELEMETRY: "1" },
          // Its own process group, so that the teardown stops the app and esbuild with it.
          detached: true,
          stdio: ["ignore", "pipe", "pipe"],
        },
      );
      child = synth;
      let output = "";
      const collect = (chunk: Buffer) => {
        output = (output + chunk.toString()).slice(-20_000);
      };
      synth.stdout?.on("data", collect);
      synth.stderr?.on("data", collect);
      let recorded = false;
      const record = async (result: SynthResult) => {
        if (recorded) return;
        recorded = true;
        // Written aside and renamed, so that no test reads half of it.
        await writeFile(`${resultFile}.partial`, JSON.stringify(result));
        await rename(`${resultFile}.partial`, resultFile);
      };
      const settle = (result: SynthResult) => record(result).then(resolve, resolve);
      synth.once("error", (error) => settle({ code: null, signal: null, output: String(error) }));
      synth.once("close", (code, signal) => settle({ code, signal, output }));
    });
  const finished = (after ?? Promise.resolve()).then(() => (stopped ? undefined : run()));
  /** Stops it, or keeps it from starting. */
  const kill = () => {
    stopped = true;
    if (child?.pid && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(-child.pid, "SIGTERM");
      } catch {
        // It ended between the check and the signal.
      }
    }
  };
  return {
    name,
    paths: { outDir, resultFile },
    finished,
    kill,
    async stop() {
      kill();
      await finished;
    },
  };
}

/**
 * The run's `cdk synth` output for a stack of `STACKS` (cdk.json's by default), once it has
 * finished; throws with its output if it failed.
 */
export async function synthesized(name: SynthName = "webhooks") {
  const { outDir, resultFile } = inject("cdkSynth")[name];
  await waitFor(() => existsSync(resultFile), 180_000, "cdk synth");
  const result = JSON.parse(await readFile(resultFile, "utf8")) as SynthResult;
  if (result.code !== 0) {
    throw new Error(`cdk synth failed (${result.code ?? result.signal}):\n${result.output}`);
  }
  const templateFile = join(outDir, `${STACKS[name].stackName}.template.json`);
  const template = JSON.parse(await readFile(templateFile, "utf8")) as {
    Resources: Record<string, { Type: string; Metadata?: Record<string, unknown> }>;
  };
  return { outDir, templateFile, template };
}
