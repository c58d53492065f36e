// What a sender from outside writes (a webhook's request, a remote network's user) becomes a
// display name or a message: the characters a homeserver may refuse or store badly go first, so
// that one request cannot have its room's queue retried forever, and a name shows what it is.

// Half of a surrogate pair: a string cut mid-character (JSON's `\ud800` escapes allow them).
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;
// C0 controls (NUL among them) but tab, line feed and carriage return; DEL; C1 controls.
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching the controls is the point
const CONTROL = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]/g;
// In a name, every control and every bidi mark, embedding, override and isolate: they would
// hide or reorder the text around the name.
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching the controls is the point
const NAME_UNWANTED = /[\u0000-\u001F\u007F-\u009F\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/g;

// In a name, what shows nothing or hides what follows: zero-width characters, fillers (U+3164,
// U+115F, U+FFA0…), soft hyphens, tag characters (every default-ignorable code point, but the
// variation selectors that choose an emoji's look) and the braille blank.
const NAME_INVISIBLE = /(?![\uFE00-\uFE0F])\p{Default_Ignorable_Code_Point}|\u2800/gu;
// Runs of 3 or more combining marks (stacked into a tall smear over the text around), and marks
// with nothing to combine with. A language's letters carry no more than 2, even decomposed.
const MARK_RUN = /\p{M}{3,}|^\p{M}+/gu;

/** Message text: lone surrogates become U+FFFD, and controls but tab and newlines go. */
export const cleanText = (text: string): string =>
  text.replace(LONE_SURROGATE, "\uFFFD").replace(CONTROL, "");

/**
 * A one-line name of at most `maxLength` characters (code points, never half of one): without
 * controls, bidi controls, lone surrogates, invisible characters or runs of combining marks, its
 * spaces collapsed. For display names and file names.
 */
export const cleanName = (name: string, maxLength: number): string =>
  Array.from(
    name
      .replace(LONE_SURROGATE, "")
      .replace(NAME_UNWANTED, " ")
      .replace(NAME_INVISIBLE, "")
      .replace(/\s+/g, " ")
      .trim()
      .replace(MARK_RUN, "")
      .normalize("NFC"),
  )
    .slice(0, maxLength)
    .join("")
    .trim();
