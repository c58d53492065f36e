// A setup file (vitest.config.ts): run before each test file, so that its `afterAll` is the
// file's first, and thus, after hooks running last first, the last to run.
import { afterAll } from "vitest";
import { removeTempDirs } from "./temp-dirs.ts";

afterAll(removeTempDirs);
