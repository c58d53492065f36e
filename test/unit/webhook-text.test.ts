import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { cleanName, cleanText } from "../../functions/appservice/api.ts";

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
// biome-ignore lint/suspicious/noControlCharactersInRegex: what must not survive
const NAME_FORBIDDEN = /[\u0000-\u001F\u007F-\u009F\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/;
// In a name either: what shows nothing, and stacks of combining marks.
const NAME_INVISIBLE =
  /[\u00AD\u115F\u1160\u200B-\u200D\u2060\u2800\u3164\uFEFF\uFFA0\u{E0000}-\u{E007F}]|\p{M}{3}/u;
// biome-ignore lint/suspicious/noControlCharactersInRegex: what must not survive
const TEXT_FORBIDDEN = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]/;

describe("webhook input a homeserver may choke on", () => {
  it("names: no NUL, controls or bidi overrides; one line", () => {
    expect(cleanName("CI\u0000 bot", 256)).toBe("CI bot");
    expect(cleanName("\u202Egnp.exe\u202C admin", 256)).toBe("gnp.exe admin");
    expect(cleanName("a\u2066b\u2069c\u200Fd\u061C", 256)).toBe("a b c d");
    expect(cleanName("line\r\nbreak\tand\u0085next\u0007", 256)).toBe("line break and next");
    expect(cleanName("\u0000\u202E  \n", 256)).toBe("");
  });

  it("names: nothing invisible (zero-width, fillers, soft hyphens, tag characters), no stacks of marks", () => {
    // The red team's names, each made to look like "admin" or like nothing at all.
    expect(cleanName("ad\u200Bmin\u200C\u200D\u2060\uFEFF", 256)).toBe("admin");
    expect(cleanName("\u3164", 256)).toBe("");
    expect(cleanName("\u115F\u1160\uFFA0\u2800", 256)).toBe("");
    expect(cleanName("ad\u00ADmin", 256)).toBe("admin");
    expect(cleanName("admin\u{E0041}\u{E0042}\u{E007F}", 256)).toBe("admin");
    expect(cleanName("a\u180Ed\u034Fmin\u2061", 256)).toBe("admin");
    expect(cleanName(`Z${"\u0336\u0301\u0316".repeat(30)}algo`, 256)).toBe("Zalgo");
    expect(cleanName("\u0301\u0302admin", 256)).toBe("admin");
    // Letters with their accents stay: composed, or decomposed and composed again (NFC).
    expect(cleanName("Nguyễn Thị Ánh", 256)).toBe("Nguyễn Thị Ánh");
    expect(cleanName("Nguye\u0302\u0303n", 256)).toBe("Nguyễn");
    expect(cleanName("हिन्दी", 256)).toBe("हिन्दी");
    // An emoji keeps its presentation selector.
    expect(cleanName("deploy \u2764\uFE0F", 256)).toBe("deploy \u2764\uFE0F");
  });

  it("names: a lone surrogate goes, and a cut never splits a character", () => {
    expect(cleanName("build \uD83D", 256)).toBe("build");
    expect(cleanName("\uDE00x", 256)).toBe("x");
    // 3 emoji are 6 UTF-16 units: cut to 2 characters, not to 2 units.
    expect(cleanName("😀😀😀", 2)).toBe("😀😀");
    expect(cleanName("ab😀", 3)).toBe("ab😀");
  });

  it("text: NUL and controls go, tabs and newlines stay, lone surrogates become U+FFFD", () => {
    expect(cleanText("a\u0000b\u001Bc\u007Fd\u009Be")).toBe("abcde");
    expect(cleanText("line 1\r\n\tline 2")).toBe("line 1\r\n\tline 2");
    expect(cleanText("cut \uD83D")).toBe("cut \uFFFD");
    expect(cleanText("😀 and \u202Eright-to-left")).toBe("😀 and \u202Eright-to-left");
  });

  it("any string: the result is well formed, and a name holds no control or bidi character", () => {
    const text = fc.oneof(
      fc.string({ unit: "binary" }),
      fc.string({ unit: "grapheme" }),
      // Invisible characters and combining marks among letters.
      fc.string({
        unit: fc.constantFrom(
          "a",
          " ",
          "\u0301",
          "\u0336",
          "\u200B",
          "\u3164",
          "\u00AD",
          "\u{E0041}",
        ),
      }),
    );
    fc.assert(
      fc.property(text, fc.integer({ min: 1, max: 300 }), (input, max) => {
        const name = cleanName(input, max);
        expect(name).not.toMatch(LONE_SURROGATE);
        expect(name).not.toMatch(NAME_FORBIDDEN);
        expect(name).not.toMatch(NAME_INVISIBLE);
        expect(Array.from(name).length).toBeLessThanOrEqual(max);
        expect(name).toBe(name.trim());
        const message = cleanText(input);
        expect(message).not.toMatch(LONE_SURROGATE);
        expect(message).not.toMatch(TEXT_FORBIDDEN);
      }),
      { numRuns: 1000 },
    );
  });
});
