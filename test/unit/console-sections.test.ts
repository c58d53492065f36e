import { describe, expect, it } from "vitest";
import type { ConsoleSection } from "../../functions/appservice/application.ts";
import { OperatorConsole, type OperatorDeps } from "../../functions/operator/console.ts";

// A section's ID is a segment of the console's API path and the page's: the console refuses,
// when it is built (the admin function's start), one that is malformed or declared twice.

const section = (id: string): ConsoleSection => ({
  id,
  title: id,
  columns: [{ key: "roomId", label: "room" }],
  rows: async () => [],
});

/** The console with `sections`: nothing else is reached while it is built. */
const consoleWith = (...ids: string[]) =>
  new OperatorConsole({ sections: ids.map(section) } as unknown as OperatorDeps);

describe("OperatorConsole: the application's section IDs", () => {
  it("takes unique IDs of a-z, 0-9 and - up to 64 characters", () => {
    const ids = ["webhooks", "a", "room-2", "x".repeat(64)];
    expect(
      consoleWith(...ids)
        .sections()
        .map((s) => s.id),
    ).toEqual(ids);
  });

  it.each(["", "Webhooks", "a/b", "a b", "a_b", "..", "x".repeat(65)])(
    "refuses %j, naming it",
    (id) => {
      expect(() => consoleWith("webhooks", id)).toThrow(
        `The console section ${JSON.stringify(id)} has an ID that is not 1 to 64 of a-z, 0-9 and -`,
      );
    },
  );

  it("refuses an ID declared twice", () => {
    expect(() => consoleWith("webhooks", "rooms", "webhooks")).toThrow(
      'The console section "webhooks" is declared twice: section IDs are unique',
    );
  });
});
