import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MAX_CONTENT_BYTES } from "../../functions/applications/webhooks/webhooks/post.ts";
import {
  MAX_HTML_DEPTH,
  renderMarkdown,
  sanitizeMatrixHtml,
} from "../../functions/applications/webhooks/webhooks/render.ts";
import { MatrixError } from "../../functions/appservice/api.ts";

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

  it("drops data-mx-maths with \\includegraphics or any \\html… command", () => {
    for (const maths of [
      "\\includegraphics[height=9in]{https://evil.example/p.png}",
      "\\htmlStyle{position:fixed;inset:0}{x}",
      "\\htmlClass{x}{y}",
      "\\htmlId{x}{y}",
      "\\htmlData{x=1}{y}",
      "a &#92;HTMLstyle{x}{y}",
    ]) {
      expect(sanitizeMatrixHtml(`<span data-mx-maths="${maths}">x</span>`)).toBe("<span>x</span>");
      expect(sanitizeMatrixHtml(`<div data-mx-maths="${maths}">x</div>`)).toBe("<div>x</div>");
    }
    expect(sanitizeMatrixHtml('<span data-mx-maths="\\frac{a}{b}">x</span>')).toBe(
      '<span data-mx-maths="\\frac{a}{b}">x</span>',
    );
  });

  it.each([
    "https://ok.example/a%0aSet-Cookie:x",
    "https://ok.example/a%0D%0Ab",
    "https://ok.example/%00",
    "https://ok.example/a%7f",
    "https://ok.example/a&#10;b",
    "https://ok.example/a&#13;b",
    "https://ok.example/a&#9;b",
    "https://ok.example/a%1b[31mb",
  ])("drops the href %s (a control, raw or encoded)", (href) => {
    expect(sanitizeMatrixHtml(`<a href="${href}">text</a>`)).toBe("<a>text</a>");
  });

  it("removes a stripped mx-reply whole: no forged 'In reply to' quote is left", () => {
    const forged =
      '<mx-reply><blockquote><a href="https://matrix.to/#/!room:x/$e">In reply to</a> <a href="https://matrix.to/#/@admin:x">@admin:x</a><br>I approve the transfer</blockquote></mx-reply>Done.';
    expect(sanitizeMatrixHtml(forged)).toBe("Done.");
    expect(sanitizeMatrixHtml(`<p>${forged}</p>`)).toBe("<p>Done.</p>");
    expect(sanitizeMatrixHtml("<MX-REPLY><b>x</b>")).toBe("");
    expect(sanitizeMatrixHtml("<blockquote>a real quote</blockquote>")).toBe(
      "<blockquote>a real quote</blockquote>",
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

/** How long `run` takes, the best of five (a loaded machine slows a run, never speeds it). */
function bestMs(run: () => unknown): number {
  let best = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 5; i++) {
    const started = performance.now();
    try {
      run();
    } catch {}
    best = Math.min(best, performance.now() - started);
  }
  return best;
}

describe("sanitizeMatrixHtml: bounded work", () => {
  const refusal = (html: string) => {
    try {
      sanitizeMatrixHtml(html);
    } catch (error) {
      return error;
    }
    return undefined;
  };

  it("refuses tags nested past 100 levels with a 400, within 100 ms even for 400,000 (was 69 s)", () => {
    for (const html of [
      "<b>".repeat(400_000),
      "<div><b>".repeat(20_000),
      "<p><i>".repeat(10_000),
    ]) {
      const error = refusal(html);
      expect(error).toBeInstanceOf(MatrixError);
      expect(error).toMatchObject({ status: 400, errcode: "M_INVALID_PARAM" });
      expect((error as Error).message).toBe(
        `The HTML nests tags deeper than ${MAX_HTML_DEPTH} levels`,
      );
      // The best of five: the other test files share the cores.
      expect(bestMs(() => refusal(html))).toBeLessThan(100);
    }
    // At the limit it is sanitized; void and implied closes do not count as depth.
    const deepest = `${"<b>".repeat(MAX_HTML_DEPTH)}x`;
    expect(sanitizeMatrixHtml(deepest)).toBe(`${deepest}${"</b>".repeat(MAX_HTML_DEPTH)}`);
    expect(sanitizeMatrixHtml("<br>".repeat(1000) + "<p>a".repeat(1000))).toContain("<p>a</p>");
  });

  it("Markdown nested past the limit (emphasis escapes markdown-it's own) is a 400 too", () => {
    expect(() => renderMarkdown(`${"*".repeat(500)}x${"*".repeat(500)}`)).toThrow(
      `The text, rendered from Markdown, nests tags deeper than ${MAX_HTML_DEPTH} levels`,
    );
    // Blocks stop nesting at markdown-it's limit (20) and render.
    expect(renderMarkdown(`${"> ".repeat(500)}x`)).toContain("<blockquote>");
  });

  it("the most HTML a webhook may send is sanitized in bounded time, whatever its shape", () => {
    // The size is checked before the sanitizer runs (post.ts), and the depth while it parses:
    // what is left to bound is the largest input of each shape, not a ratio a collector blurs.
    const deepest = `${"<b>".repeat(MAX_HTML_DEPTH)}x${"</b>".repeat(MAX_HTML_DEPTH)}`;
    const fill = (unit: string) => unit.repeat(Math.floor(MAX_CONTENT_BYTES / unit.length));
    for (const html of [
      fill(deepest),
      fill("<b>x</b>"),
      fill('<a href="https://example.org/">y</a>'),
      fill("<table><tr><td>x</td></tr></table>"),
    ]) {
      sanitizeMatrixHtml(html); // warmed up: the first run also compiles
      // 6 to 30 ms measured on this 2-core machine at load 10 (deep nesting, which was quadratic,
      // is refused above).
      expect(bestMs(() => sanitizeMatrixHtml(html))).toBeLessThan(500);
    }
  });
});
