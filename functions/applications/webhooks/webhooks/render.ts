import MarkdownIt from "markdown-it";
import sanitizeHtml from "sanitize-html";
import { MatrixError } from "../../../appservice/api.ts";

/**
 * The deepest nesting of tags taken. The parser under sanitize-html (htmlparser2) keeps its open
 * tags in an array it grows at the front, so its time grows with the square of the depth (400,000
 * `<b>`: 69 s); refused at this depth, it stays linear. Clients render no deeper anyway.
 */
export const MAX_HTML_DEPTH = 100;

/** HTML nested past `MAX_HTML_DEPTH`: a 400 for the sender, naming what was (`what` nests …). */
const tooDeep = (what: string) =>
  new MatrixError(
    400,
    "M_INVALID_PARAM",
    `${what} nests tags deeper than ${MAX_HTML_DEPTH} levels`,
  );

// Raw HTML in the Markdown stays text; markdown-it also refuses javascript: and data: links. Its
// own nesting limit keeps what it writes well within MAX_HTML_DEPTH.
const markdown = new MarkdownIt({ html: false, linkify: true, breaks: true });
// An option of markdown-it's that its types omit (100 by default, for blocks and inline apart).
Object.assign(markdown.options, { maxNesting: 20 });

const colours = ["data-mx-bg-color", "data-mx-color"];

// URLs are checked as the parser decoded them (entities included), before they are written
// back. Images only from the homeserver's media repository: `mxc://<server>/<media id>`.
const MXC = /^mxc:\/\/(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?\/[A-Za-z0-9_-]+$/;
// Links only absolute, with the schemes the spec allows: no relative or protocol-relative URL
// (a browser resolves even `https:host` against the page when the page is https).
const ABSOLUTE_LINK = /^(?:(?:https?|ftp):\/\/[^\s/\\]|mailto:\S|magnet:\?)/i;
const COLOUR = /^#[0-9a-f]{6}$/i;
// KaTeX turns these into links, images (`\includegraphics`, fetched from anywhere) or raw HTML
// attributes (`\htmlStyle`, `\htmlClass`, `\htmlId`, `\htmlData`: styles that cover the page).
const MATHS_UNSAFE = /\\(?:href|url|includegraphics|html)/i;
// A link whose text hides a line break or a control (raw, or percent-encoded: `%0a`, `%0d`, `%00`)
// can split a header or a log line where a client passes it on.
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching the controls is the point
const LINK_CONTROL = /[\u0000-\u001F\u007F-\u009F]|%(?:[01][0-9a-f]|7f)/i;

/** Attributes whose value must pass a check, else they are dropped; URLs must also parse. */
const VALUE_CHECKS: Record<string, (value: string) => boolean> = {
  src: (value) => MXC.test(value) && URL.canParse(value),
  href: (value) => ABSOLUTE_LINK.test(value) && !LINK_CONTROL.test(value) && URL.canParse(value),
  color: (value) => COLOUR.test(value),
  "data-mx-color": (value) => COLOUR.test(value),
  "data-mx-bg-color": (value) => COLOUR.test(value),
  "data-mx-maths": (value) => !MATHS_UNSAFE.test(value),
};

/** What the Matrix spec lets clients render in `formatted_body` (`m.room.message`, HTML). */
const MATRIX_HTML: sanitizeHtml.IOptions = {
  allowedTags: [
    "font",
    "del",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "p",
    "a",
    "ul",
    "ol",
    "sup",
    "sub",
    "li",
    "b",
    "i",
    "u",
    "strong",
    "em",
    "s",
    "code",
    "hr",
    "br",
    "div",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "caption",
    "pre",
    "span",
    "img",
    "details",
    "summary",
    // Taken only to be removed with its content (below): a webhook's message replies to nothing.
    "mx-reply",
  ],
  allowedAttributes: {
    font: [...colours, "color"],
    span: [...colours, "data-mx-spoiler", "data-mx-maths"],
    div: ["data-mx-maths"],
    a: ["name", "target", "href"],
    img: ["width", "height", "alt", "title", "src"],
    ol: ["start"],
    code: [{ name: "class", multiple: true, values: [] }],
  },
  allowedClasses: { code: ["language-*"] },
  allowedSchemes: ["https", "http", "ftp", "mailto", "magnet"],
  allowedSchemesByTag: { img: ["mxc"] },
  transformTags: {
    "*": (tagName, attribs) => ({
      tagName,
      attribs: Object.fromEntries(
        Object.entries(attribs).filter(([name, value]) => VALUE_CHECKS[name]?.(value) ?? true),
      ),
    }),
  },
  // An image without a source left is no image. A reply's fallback (`<mx-reply>`, the quote
  // "In reply to …") goes whole: dropping the tag alone would leave a quote of anything, forged.
  exclusiveFilter: (frame) =>
    (frame.tag === "img" && !frame.attribs.src) || frame.tag === "mx-reply",
};

/**
 * HTML cut down to what Matrix clients may render, in time linear in its length: nested past
 * `MAX_HTML_DEPTH`, it is refused (a 400) as soon as the parser gets there.
 */
export function sanitizeMatrixHtml(html: string, what = "The HTML"): string {
  let depth = 0;
  return sanitizeHtml(html, {
    ...MATRIX_HTML,
    // Every tag the parser opens is closed through onCloseTag (void and implied ones included).
    onOpenTag: () => {
      if (++depth > MAX_HTML_DEPTH) throw tooDeep(what);
    },
    onCloseTag: () => {
      depth--;
    },
  }).trim();
}

/**
 * Markdown as sanitized Matrix HTML. `check` is given the rendered HTML's size in bytes before it
 * is sanitized, and may throw to stop there.
 */
export function renderMarkdown(text: string, check?: (htmlBytes: number) => void): string {
  const html = markdown.render(text);
  check?.(Buffer.byteLength(html));
  // Emphasis escapes markdown-it's nesting limit (`*` × 500 nests 250 levels).
  return sanitizeMatrixHtml(html, "The text, rendered from Markdown,");
}
