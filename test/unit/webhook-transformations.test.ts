import { describe, expect, it } from "vitest";
import { codeOf } from "../../functions/applications/webhooks/webhooks/commands.ts";
import { messageOfResult } from "../../functions/applications/webhooks/webhooks/message.ts";
import { PRESETS } from "../../functions/applications/webhooks/webhooks/presets.ts";
import {
  runTransformation,
  TRANSFORMATION_TIME_MS,
  TransformationError,
} from "../../functions/applications/webhooks/webhooks/sandbox.ts";
import { TRANSFORMATION_KILL_MS } from "../../functions/applications/webhooks/webhooks/sandbox-protocol.ts";
import { DISK_FULL_ALERT } from "../support/webhooks.ts";

const failure = async (code: string, data: unknown = {}) => {
  const started = performance.now();
  const error = await runTransformation(code, data).then(
    () => undefined,
    (thrown: unknown) => thrown,
  );
  expect(error).toBeInstanceOf(TransformationError);
  return { message: (error as Error).message, ms: performance.now() - started };
};

describe("transformations, in QuickJS (WebAssembly)", () => {
  it("returns what the code returns, or sets as hookshot's `result`; nothing is null", async () => {
    expect(await runTransformation("return { text: 'n=' + data.n };", { n: 2 })).toEqual({
      text: "n=2",
    });
    expect(await runTransformation('result = { version: "v2", plain: data };', "hi")).toEqual({
      version: "v2",
      plain: "hi",
    });
    expect(await runTransformation("if (data.skip) return; return 1;", { skip: true })).toBeNull();
  });

  it("a loop that never ends is stopped at the time limit, and the engine runs the next one", async () => {
    const { message, ms } = await failure("for (;;) {}");
    expect(message).toBe(`stopped: it ran over ${TRANSFORMATION_TIME_MS} ms`);
    // The limit plus the engine's set-up, never the seconds a loop would take.
    expect(ms).toBeLessThan(TRANSFORMATION_TIME_MS * 10);
    expect(await runTransformation("return data.n + 1;", { n: 1 })).toBe(2);
  });

  it("memory and stack are bounded: a growing array, a doubling string, deep recursion", async () => {
    const array = await failure("const a = []; for (;;) a.push(new Array(1e5).fill(a.length));");
    expect(array.message).toMatch(/out of memory|stopped/);
    // A built-in that runs long between two interrupt checks: ended with its thread.
    const long = await failure("const a = []; for (;;) a.push(new Array(1e6).fill(1));");
    expect(long.message).toMatch(/out of memory|stopped/);
    // Its thread's time limit plus a new thread's start, not the tens of seconds of a collector
    // thrashing at the limit.
    expect(long.ms).toBeLessThan(TRANSFORMATION_KILL_MS + 10_000);
    expect((await failure("let s = 'x'; for (;;) s += s;")).message).toMatch(
      /out of memory|string too long|stopped/,
    );
    expect((await failure("const f = () => f(); f();")).message).toMatch(/stack overflow/);
    expect(await runTransformation("return 'still fine';", null)).toBe("still fine");
  });

  it("a run that replaces JSON.stringify gets its own result, and the runs beside it theirs", async () => {
    const runs = await Promise.allSettled([
      runTransformation("JSON.stringify = () => ({}); return { text: 'mine' };", null),
      ...[1, 2, 3].map((n) => runTransformation("return data.n * 10;", { n })),
      runTransformation("return { toJSON() { throw new RangeError('no'); } };", null),
      runTransformation("JSON.parse = () => 1; return 'still me';", null),
    ]);
    expect(runs.slice(0, 4)).toEqual([
      { status: "fulfilled", value: { text: "mine" } },
      { status: "fulfilled", value: 10 },
      { status: "fulfilled", value: 20 },
      { status: "fulfilled", value: 30 },
    ]);
    expect(runs[4]).toMatchObject({
      status: "rejected",
      reason: { kind: "RangeError", message: "RangeError: no" },
    });
    expect(runs[5]).toEqual({ status: "fulfilled", value: "still me" });
  });

  it("a run ended with its thread at the hard limit fails alone: the runs queued behind it go on, each timed from its own start", async () => {
    // A built-in that never reaches the interrupt: a naive search of 10^4 characters in 10^6.
    const stuck = "const s = 'a'.repeat(1e6); return s.indexOf('a'.repeat(1e4) + 'b');";
    const started = performance.now();
    const [first, second, ...others] = await Promise.allSettled([
      runTransformation(stuck, null),
      runTransformation(stuck, null),
      ...[1, 2, 3, 4, 5, 6].map((n) =>
        // Each about half of its own time limit, and all queued behind the stuck ones: together
        // far over any one run's time, had it started when the run was asked for.
        runTransformation(
          `const end = Date.now() + ${TRANSFORMATION_TIME_MS / 2}; while (Date.now() < end) {} return data.n;`,
          { n },
        ),
      ),
    ]);
    for (const killed of [first, second]) {
      expect(killed).toMatchObject({
        status: "rejected",
        reason: { kind: "over the time limit", ofTheCode: true },
      });
    }
    // Ended by the host's hard limit, not the engine's interrupt.
    expect(performance.now() - started).toBeGreaterThanOrEqual(TRANSFORMATION_KILL_MS);
    // With both threads ended and no call after them: the kill itself starts the new engines.
    expect(others).toEqual([1, 2, 3, 4, 5, 6].map((n) => ({ status: "fulfilled", value: n })));
  }, 20_000);

  it("a failure's kind is in words of ours; its message (maybe the payload's) apart", async () => {
    const thrown = await runTransformation("throw new Error(data.text);", {
      text: "Your account is locked: log in at https://evil.example",
    }).catch((error: unknown) => error);
    expect(thrown).toMatchObject({
      kind: "Error",
      message: "Error: Your account is locked: log in at https://evil.example",
    });
    const named = await runTransformation("throw { name: data.text, message: 'x' };", {
      text: "Visit evil.example",
    }).catch((error: unknown) => error);
    expect(named).toMatchObject({ kind: "a thrown value" });
    expect((await failure("for (;;) {}")).message).toMatch(/stopped/);
  });

  it("no access to the host: no require, process, fetch, timers or I/O; one run's globals do not reach the next", async () => {
    const globals = await runTransformation(
      "return ['require', 'process', 'fetch', 'setTimeout', 'std', 'os', 'Deno', 'Bun', 'XMLHttpRequest', 'WebAssembly'].filter((name) => typeof globalThis[name] !== 'undefined');",
      null,
    );
    expect(globals).toEqual([]);
    expect((await failure("return require('fs');")).message).toMatch(/ReferenceError/);
    // One run's globals do not reach the next.
    await runTransformation("globalThis.leak = 1; return null;", null);
    expect(await runTransformation("return typeof globalThis.leak;", null)).toBe("undefined");
  });

  it("errors name what the code threw, not the host's stack; a syntax error is found without running", async () => {
    expect((await failure("throw new TypeError('bad payload');")).message).toBe(
      "TypeError: bad payload",
    );
    expect((await failure("throw 5;")).message).toBe("it threw 5");
    const syntax = await runTransformation("return {", null, { compileOnly: true }).catch(
      (error: unknown) => error,
    );
    expect(syntax).toBeInstanceOf(TransformationError);
    expect((syntax as Error).message).toMatch(/^SyntaxError/);
    expect(await runTransformation("for (;;) {}", null, { compileOnly: true })).toBeNull();
  });

  it("a result is read as a message: nothing, {empty: true}, a string, {plain}, {text, html, msgtype}", () => {
    expect(messageOfResult(null)).toBeUndefined();
    expect(messageOfResult({ version: "v2", empty: true })).toBeUndefined();
    expect(messageOfResult("just text")).toEqual({ text: "just text" });
    expect(messageOfResult({ version: "v2", plain: "p", msgtype: "m.notice" })).toEqual({
      text: "p",
      msgtype: "m.notice",
    });
    expect(messageOfResult({ text: "t", html: "<b>t</b>", msgtype: "m.emote" })).toEqual({
      text: "t",
      html: "<b>t</b>",
      msgtype: "m.emote",
    });
    expect(() => messageOfResult({ text: "t", msgtype: "m.image" })).toThrow(/msgtype/);
    expect(() => messageOfResult(42)).toThrow(/text/);
  });

  it("a command's code: the code block, else the lines after the command", () => {
    expect(codeOf("!webhook transform ci\n```js\nreturn 1;\n```")).toBe("return 1;");
    expect(codeOf("!webhook transform ci\nreturn 2;")).toBe("return 2;");
    expect(codeOf("!webhook transform ci")).toBe("");
  });
});

describe("presets", () => {
  const run = async (preset: string, data: unknown) =>
    messageOfResult(await runTransformation(PRESETS[preset as keyof typeof PRESETS], data));

  it("alertmanager: firing and resolved alerts, with their severity, instance and summary", async () => {
    const message = await run("alertmanager", {
      ...DISK_FULL_ALERT,
      alerts: [
        ...DISK_FULL_ALERT.alerts,
        { status: "resolved", labels: { alertname: "HighLoad" }, annotations: {} },
      ],
    });
    expect(message?.text).toContain("**1 firing**");
    expect(message?.text).toContain(
      "- **DiskFull** [critical] on db1: disk at 97% ([source](https://prometheus.example/graph))",
    );
    expect(message?.text).toContain("**1 resolved**");
    expect(message?.msgtype).toBe("m.text");
    expect(await run("alertmanager", { something: "else" })).toBeUndefined();
  });

  it("github: a push with its commits, a merged pull request; other events post nothing", async () => {
    const push = await run("github", {
      ref: "refs/heads/main",
      repository: { full_name: "acme/app" },
      sender: { login: "ada" },
      compare: "https://github.example/acme/app/compare/a...b",
      commits: [
        { id: "0123456789abcdef", message: "Fix the build\n\nlong text", url: "https://c/1" },
      ],
    });
    expect(push?.text).toBe(
      [
        "**ada** pushed 1 commit to **acme/app** main ([compare](https://github.example/acme/app/compare/a...b))",
        "- [0123456](https://c/1) Fix the build",
      ].join("\n"),
    );
    const merged = await run("github", {
      action: "closed",
      number: 7,
      repository: { full_name: "acme/app" },
      sender: { login: "bob" },
      pull_request: { title: "Add X", html_url: "https://pr/7", merged: true },
    });
    expect(merged?.text).toBe(
      "**bob** merged pull request [#7 Add X](https://pr/7) in **acme/app**",
    );
    expect(
      await run("github", { action: "labeled", repository: {}, pull_request: {} }),
    ).toBeUndefined();
  });

  it("gitlab: a push and a merge request", async () => {
    const push = await run("gitlab", {
      object_kind: "push",
      ref: "refs/heads/dev",
      user_name: "Cy",
      project: { path_with_namespace: "g/p" },
      total_commits_count: 2,
      commits: [
        { id: "abcdef0123", title: "one", url: "https://c/1" },
        { id: "bcdef01234", title: "two", url: "https://c/2" },
      ],
    });
    expect(push?.text).toContain("**Cy** pushed 2 commits to **g/p** dev");
    const mr = await run("gitlab", {
      object_kind: "merge_request",
      user: { username: "dee" },
      project: { path_with_namespace: "g/p" },
      object_attributes: { iid: 3, title: "T", url: "https://mr/3", action: "open" },
    });
    expect(mr?.text).toBe("**dee** opened merge request [!3 T](https://mr/3) in **g/p**");
  });
});
