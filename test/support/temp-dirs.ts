import { mkdtempSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** The folders `tempDir` made that are still there. */
const made = new Set<string>();

/**
 * A new folder under the system's temporary one, named from `prefix`, removed after its test file
 * (`removeTempDirs`).
 */
export async function tempDir(prefix = "appservice-test-") {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  made.add(dir);
  return dir;
}

/** The same, made at once: for what cannot wait (a CDK app's `outdir`). */
export function tempDirSync(prefix = "appservice-test-") {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  made.add(dir);
  return dir;
}

/**
 * Removes every folder `tempDir` made: the setup file `clean-temp-dirs.ts` calls it after each
 * test file's own `afterAll`s, which stop what wrote there.
 */
export async function removeTempDirs() {
  const dirs = [...made];
  made.clear();
  await Promise.all(
    dirs.map((dir) =>
      rm(dir, { recursive: true, force: true, maxRetries: 3 }).catch(() => undefined),
    ),
  );
}
