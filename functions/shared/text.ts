// What a remote sender writes (a webhook, a bridge's remote side) becomes a display name or a
// message: the characters a homeserver may refuse or store badly go first, so that one request
// cannot have its room's queue retried forever.

// Half of a surrogate pair: a string cut mid-character (JSON's `\ud800` escapes allow them).
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;
// C0 controls (NUL among them) but tab, line feed and carriage return; DEL; C1 controls.
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching the controls is the point
const CONTROL = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]/g;
// In a name, every control and every bidi mark, embedding, override and isolate: they would
// hide or reorder the text around the name.
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching the controls is the point
const NAME_UNWANTED = /[\u0000-\u001F\u007F-\u009F\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/g;

/** Message text: lone surrogates become U+FFFD, and controls but tab and newlines go. */
export const cleanText = (text: string): string =>
  text.replace(LONE_SURROGATE, "\uFFFD").replace(CONTROL, "");

/**
 * A one-line name of at most `maxLength` characters (code points, never half of one): without
 * controls, bidi controls or lone surrogates, its spaces collapsed.
 */
export const cleanName = (name: string, maxLength: number): string =>
  Array.from(
    name.replace(LONE_SURROGATE, "").replace(NAME_UNWANTED, " ").replace(/\s+/g, " ").trim(),
  )
    .slice(0, maxLength)
    .join("")
    .trim();
