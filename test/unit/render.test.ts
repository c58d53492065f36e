import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  renderMarkdown,
  sanitizeMatrixHtml,
} from "../../functions/applications/webhooks/webhooks/render.ts";

// Where a Matrix web client runs: a URL that resolves to it was relative.
const CLIENT = "https://client.invalid/app/";

/** The output's tags and their attributes, as written back by the sanitizer (always quoted). */
function tagsOf(html: string): { tag: string; attributes: Map<string, string> }[] {
  const decode = (value: string) =>
    value
      .replaceAll("&lt;", "<")
      .replaceAll("&gt;", ">")
      .replaceAll("&quot;", '"')
      .replaceAll("&amp;", "&");
  return [...html.matchAll(/<([a-z0-9]+)([^>]*)>/g)].map(([, tag, attributes]) => ({
    tag: tag as string,
    attributes: new Map(
      [...(attributes as string).matchAll(/([^\s="/]+)="([^"]*)"/g)].map(([, name, value]) => [
        name as string,
        decode(value as string),
      ]),
    ),
  }));
}

/** What no sanitized output may hold, checked with the WHATWG URL parser as browsers resolve. */
function expectSafe(html: string) {
  for (const { tag, attributes } of tagsOf(html)) {
    const src = attributes.get("src");
    if (tag === "img") {
      expect(src, html).toBeDefined();
      expect(new URL(src as string, CLIENT).protocol, html).toBe("mxc:");
      expect(src?.startsWith("mxc://"), html).toBe(true);
    }
    const href = attributes.get("href");
    if (href !== undefined) {
      const resolved = new URL(href, CLIENT);
      expect(["https:", "http:", "ftp:", "mailto:", "magnet:"], html).toContain(resolved.protocol);
      // Relative or protocol-relative: it would land on the client's own origin or path.
      expect(resolved.host, html).not.toBe("client.invalid");
      expect(href.startsWith("//"), html).toBe(false);
    }
    for (const name of ["color", "data-mx-color", "data-mx-bg-color"]) {
      const colour = attributes.get(name);
      if (colour !== undefined) expect(colour, html).toMatch(/^#[0-9a-fA-F]{6}$/);
    }
    expect(attributes.get("data-mx-maths") ?? "", html).not.toContain("\\href");
  }
}

describe("sanitizeMatrixHtml: the red team's payloads", () => {
  it.each([
    '<img src="//evil.example/p.png">',
    '<img src="&#47;&#47;evil.example/p.png">',
    '<img src="&#x2F;&#x2F;evil.example/p.png">',
    '<img src="&sol;&sol;evil.example/p.png">',
    '<img src="p.png">',
    '<img src="/p.png">',
    '<img src="../p.png">',
    '<img src="\\\\host\\share">',
    '<img src="https://evil.example/p.png">',
    '<img src=" mxc://example.org/abc">',
    '<img src="MXC://example.org/abc">',
    '<img src="mxc://example.org/../../p.png">',
    '<img src="mxc:/example.org/abc">',
    '<img src="mxc://&colon;example.org/abc">',
    "<img>",
  ])("drops %s", (payload) => {
    expect(sanitizeMatrixHtml(`before ${payload} after`)).toBe("before  after");
  });

  it("keeps an image from the media repository, with its attributes", () => {
    const img = '<img src="mxc://example.org/Ab_c-1" alt="a" width="10" />';
    expect(sanitizeMatrixHtml(img)).toBe(img);
    // Encoded, it is the same URL once decoded.
    expect(sanitizeMatrixHtml('<img src="mxc&#58;//example.org/abc">')).toBe(
      '<img src="mxc://example.org/abc" />',
    );
  });

  it.each([
    "//evil.example/",
    "&#47;&#47;evil.example/",
    "/path",
    "path",
    "../up",
    "?q=1",
    "#fragment",
    "https:evil.example",
    "\\\\evil.example\\x",
    " https://evil.example/",
    "javascript:alert(1)",
    "data:text/html,x",
  ])("drops the href %s, keeping the link's text", (href) => {
    expect(sanitizeMatrixHtml(`<a href="${href}">text</a>`)).toBe("<a>text</a>");
  });

  it.each([
    "https://ok.example/a?b#c",
    "http://ok.example",
    "ftp://ok.example/f",
    "mailto:a@ok.example",
    "magnet:?xt=urn:btih:abc",
  ])("keeps the absolute link %s", (href) => {
    expect(sanitizeMatrixHtml(`<a href="${href}">text</a>`)).toBe(`<a href="${href}">text</a>`);
  });

  it("keeps colours only as #RRGGBB", () => {
    for (const bad of ["red", "#fff", "#ff000", "#ff00000", "rgb(0,0,0)", "#ff0000;x:url(y)"]) {
      expect(
        sanitizeMatrixHtml(
          `<font color="${bad}" data-mx-color="${bad}" data-mx-bg-color="${bad}">x</font>`,
        ),
      ).toBe("<font>x</font>");
      expect(sanitizeMatrixHtml(`<span data-mx-bg-color="${bad}">x</span>`)).toBe("<span>x</span>");
    }
    const good =
      '<font color="#Ff0000" data-mx-color="#00ff00" data-mx-bg-color="#0000ff">x</font>';
    expect(sanitizeMatrixHtml(good)).toBe(good);
  });

  it("drops data-mx-maths that would make a link", () => {
    for (const maths of ["\\href{https://evil.example}{x}", "&#92;href{x}{y}", "a \\url{x}"]) {
      expect(sanitizeMatrixHtml(`<span data-mx-maths="${maths}">x</span>`)).toBe("<span>x</span>");
      expect(sanitizeMatrixHtml(`<div data-mx-maths="${maths}">x</div>`)).toBe("<div>x</div>");
    }
    expect(sanitizeMatrixHtml('<span data-mx-maths="x^2">x²</span>')).toBe(
      '<span data-mx-maths="x^2">x²</span>',
    );
  });

  it("Markdown images and relative links go the same way", () => {
    expect(renderMarkdown("![x](//evil.example/p.png) [rel](/x) [ok](https://ok.example)")).toBe(
      '<p> <a>rel</a> <a href="https://ok.example">ok</a></p>',
    );
  });
});

describe("sanitizeMatrixHtml: any input", () => {
  const piece = fc.constantFrom(
    "//",
    "/",
    "\\\\",
    "\\",
    "&#47;",
    "&#x2F;",
    "&sol;",
    "&#58;",
    "&colon;",
    "mxc://",
    "mxc:",
    "https://",
    "https:",
    "http://",
    "mailto:",
    "javascript:",
    "evil.example",
    "example.org/abc",
    " ",
    "\t",
    "\n",
    ".",
    "..",
    "?",
    "#",
    "%2F",
    "\\href",
    "#ff0000",
    "#fff",
  );
  const value = fc.oneof(
    fc.array(piece, { maxLength: 6 }).map((pieces) => pieces.join("")),
    fc.string(),
  );
  const quoted = fc
    .tuple(value, fc.constantFrom('"', "'", ""))
    .map(([v, quote]) => (quote ? `${quote}${v.replaceAll(quote, "")}${quote}` : `"${v}"`));
  const fragment = fc.oneof(
    quoted.map((v) => `<img src=${v}>`),
    quoted.map((v) => `<IMG SRC=${v} alt="a">`),
    quoted.map((v) => `<a href=${v}>link</a>`),
    quoted.map((v) => `<font color=${v} data-mx-color=${v}>f</font>`),
    quoted.map((v) => `<span data-mx-bg-color=${v} data-mx-maths=${v}>s</span>`),
    fc.string(),
    fc.constantFrom("<p>", "</p>", "<b>", "</b>", "<div>", "</div>", "<", ">", '"', "&"),
  );

  it("no image but from mxc://, no relative link, no other colour, no maths link", () => {
    fc.assert(
      fc.property(fc.array(fragment, { maxLength: 8 }), (fragments) => {
        expectSafe(sanitizeMatrixHtml(fragments.join("")));
      }),
      { numRuns: 2000 },
    );
  });

  it("the checker itself catches what the sanitizer must not let through", () => {
    expect(() => expectSafe('<img src="//evil.example/p.png" />')).toThrow();
    expect(() => expectSafe('<a href="/x">x</a>')).toThrow();
    expect(() => expectSafe('<a href="https:evil.example">x</a>')).toThrow();
    expect(() => expectSafe('<font color="red">x</font>')).toThrow();
    expect(() => expectSafe('<span data-mx-maths="\\href{a}{b}">x</span>')).toThrow();
    expectSafe('<img src="mxc://example.org/abc" /><a href="https://ok.example/">x</a>');
  });
});
