import { afterAll, afterEach, describe, expect, it, vi } from "vitest";

// The list of applications fails while `failing` is set, as a folder whose name is refused would.
const state = vi.hoisted(() => ({ failing: false }));
vi.mock("../../functions/local/applications.ts", async (importOriginal) => {
  const actual = await importOriginal<typeof import("../../functions/local/applications.ts")>();
  return {
    ...actual,
    applicationNames: (...args: Parameters<typeof actual.applicationNames>) => {
      if (state.failing) throw new Error("the applications cannot be listed");
      return actual.applicationNames(...args);
    },
  };
});

// A copy of its own, whatever an earlier file in this worker kept (the unit files share workers);
// the mock and the copy are undone for the files after it.
vi.resetModules();
const { defaultApplicationChoice } = await import("../../infra/application.ts");
afterAll(() => {
  vi.doUnmock("../../functions/local/applications.ts");
  vi.resetModules();
});

describe("defaultApplicationChoice", () => {
  afterEach(() => {
    state.failing = false;
  });

  it("keeps no failure: the next call reads the application again, then keeps it", async () => {
    state.failing = true;
    await expect(defaultApplicationChoice()).rejects.toThrow("the applications cannot be listed");
    state.failing = false;
    const first = defaultApplicationChoice();
    const choice = await first;
    expect(choice.name).toBeTruthy();
    expect(choice.application).toBeDefined();
    state.failing = true;
    expect(defaultApplicationChoice()).toBe(first);
    await expect(defaultApplicationChoice()).resolves.toBe(choice);
  });
});
