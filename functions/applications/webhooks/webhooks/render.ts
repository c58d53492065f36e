import MarkdownIt from "markdown-it";
import sanitizeHtml from "sanitize-html";

// Raw HTML in the Markdown stays text; markdown-it also refuses javascript: and data: links.
const markdown = new MarkdownIt({ html: false, linkify: true, breaks: true });

const colours = ["data-mx-bg-color", "data-mx-color"];

// URLs are checked as the parser decoded them (entities included), before they are written
// back. Images only from the homeserver's media repository: `mxc://<server>/<media id>`.
const MXC = /^mxc:\/\/(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?\/[A-Za-z0-9_-]+$/;
// Links only absolute, with the schemes the spec allows: no relative or protocol-relative URL
// (a browser resolves even `https:host` against the page when the page is https).
const ABSOLUTE_LINK = /^(?:(?:https?|ftp):\/\/[^\s/\\]|mailto:\S|magnet:\?)/i;
const COLOUR = /^#[0-9a-f]{6}$/i;
// KaTeX turns these into links.
const MATHS_LINK = /\\(?:href|url)/i;

/** Attributes whose value must pass a check, else they are dropped; URLs must also parse. */
const VALUE_CHECKS: Record<string, (value: string) => boolean> = {
  src: (value) => MXC.test(value) && URL.canParse(value),
  href: (value) => ABSOLUTE_LINK.test(value) && URL.canParse(value),
  color: (value) => COLOUR.test(value),
  "data-mx-color": (value) => COLOUR.test(value),
  "data-mx-bg-color": (value) => COLOUR.test(value),
  "data-mx-maths": (value) => !MATHS_LINK.test(value),
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
  // An image without a source left is no image.
  exclusiveFilter: (frame) => frame.tag === "img" && !frame.attribs.src,
};

/** HTML cut down to what Matrix clients may render. */
export const sanitizeMatrixHtml = (html: string): string => sanitizeHtml(html, MATRIX_HTML).trim();

/** Markdown as sanitized Matrix HTML. */
export const renderMarkdown = (text: string): string => sanitizeMatrixHtml(markdown.render(text));
