import MarkdownIt from "markdown-it";
import sanitizeHtml from "sanitize-html";

// Raw HTML in the Markdown stays text; markdown-it also refuses javascript: and data: links.
const markdown = new MarkdownIt({ html: false, linkify: true, breaks: true });

const colours = ["data-mx-bg-color", "data-mx-color"];

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
  // Clients only load images from the homeserver's media repository.
  allowedSchemesByTag: { img: ["mxc"] },
};

/** HTML cut down to what Matrix clients may render. */
export const sanitizeMatrixHtml = (html: string): string => sanitizeHtml(html, MATRIX_HTML).trim();

/** Markdown as sanitized Matrix HTML. */
export const renderMarkdown = (text: string): string => sanitizeMatrixHtml(markdown.render(text));
