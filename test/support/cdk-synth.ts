import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
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
 * background (half a minute of CPU each) while the other tests run; both at once, as on a 2-core
 * machine the two finish sooner so (a run of the infra tests alone waits for them). It bundles
 * every function exactly as a deploy does; the infra tests read its output through `synthesized()`.
 */
export default async function startSynths(project: TestProject) {
  const dir = await mkdtemp(join(tmpdir(), "cdk-synth-"));
  const synths = (Object.keys(STACKS) as SynthName[]).map((name) => startSynth(project, name, dir));
  project.provide(
    "cdkSynth",
    Object.fromEntries(synths.map((synth) => [synth.name, synth.paths])) as Record<
      SynthName,
      { outDir: string; resultFile: string }
    >,
  );
  return async () => {
    await Promise.all(synths.map((synth) => synth.stop()));
    await rm(dir, { recursive: true, force: true });
  };
}

/** One `cdk synth`, its output and its result (written when it ends) in `dir`. */
function startSynth(project: TestProject, name: SynthName, dir: string) {
  const outDir = join(dir, `${name}.out`);
  const resultFile = join(dir, `${name}.result.json`);
  const context = STACKS[name].context.flatMap((setting) => ["-c", setting]);
  // At the lowest CPU priority: it takes what the integration tests leave idle, not their share.
  const child = spawn(
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
  let output = "";
  const collect = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-20_000);
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);
  const finished = new Promise<void>((resolve) => {
    let recorded = false;
    const record = async (result: SynthResult) => {
      if (recorded) return;
      recorded = true;
      // Written aside and renamed, so that no test reads half of it.
      await writeFile(`${resultFile}.partial`, JSON.stringify(result));
      await rename(`${resultFile}.partial`, resultFile);
    };
    const settle = (result: SynthResult) => record(result).then(resolve, resolve);
    child.once("error", (error) => settle({ code: null, signal: null, output: String(error) }));
    child.once("close", (code, signal) => settle({ code, signal, output }));
  });
  return {
    name,
    paths: { outDir, resultFile },
    async stop() {
      if (child.pid && child.exitCode === null && child.signalCode === null) {
        process.kill(-child.pid, "SIGTERM");
      }
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
  const template = JSON.parse(
    await readFile(join(outDir, `${STACKS[name].stackName}.template.json`), "utf8"),
  ) as { Resources: Record<string, { Type: string; Metadata?: Record<string, unknown> }> };
  return { outDir, template };
}
