// The contents of events that relate to another (Matrix 1.4 edits, 1.7 reactions, 1.13 replies
// without fallbacks, 1.7 intentional mentions), built here for the queued actions.

/** A message's content: `msgtype` and `body` at least (`m.text`, `m.image`, …). */
export type MessageContent = Record<string, unknown> & { msgtype: string; body: string };

/** Text as an `m.text` message's content; content as given. */
export const messageContent = (content: string | MessageContent): MessageContent =>
  typeof content === "string" ? { msgtype: "m.text", body: content } : content;

/** The fallback clients without edits show: the new body marked `* `, as the spec suggests. */
const starred = (text: unknown) => (typeof text === "string" ? `* ${text}` : text);

/**
 * An `m.replace` of `eventId` by `content` (`m.new_content`, with its full `m.mentions`), its
 * fallback the new text starred. The edit itself mentions nobody: whoever the new text names
 * was mentioned, or not, by the original (the spec's rule for mentions in edits).
 */
export function editContent(eventId: string, content: MessageContent): Record<string, unknown> {
  const { "m.relates_to": _relation, "m.mentions": mentions, ...newContent } = content;
  return {
    ...newContent,
    body: starred(newContent.body),
    ...(typeof newContent.formatted_body === "string" && {
      formatted_body: starred(newContent.formatted_body),
    }),
    "m.new_content": { ...newContent, "m.mentions": mentions ?? {} },
    "m.mentions": {},
    "m.relates_to": { rel_type: "m.replace", event_id: eventId },
  };
}

/** The event a reply answers: its ID, and its sender, whom the reply mentions. */
export interface InReplyTo {
  eventId: string;
  sender?: string;
}

/**
 * `content` as a reply to `to` (`m.in_reply_to`, no fallback since Matrix 1.13), mentioning its
 * sender beside whoever `content` mentions already.
 */
export function replyContent(to: InReplyTo, content: MessageContent): Record<string, unknown> {
  const mentions = (content["m.mentions"] ?? {}) as { user_ids?: string[] };
  const userIds = [...new Set([...(mentions.user_ids ?? []), ...(to.sender ? [to.sender] : [])])];
  return {
    ...content,
    "m.mentions": { ...mentions, ...(userIds.length > 0 && { user_ids: userIds }) },
    "m.relates_to": { "m.in_reply_to": { event_id: to.eventId } },
  };
}

/** An `m.annotation` of `eventId` with `key` (an emoji, typically): a reaction's content. */
export const reactionContent = (eventId: string, key: string) => ({
  "m.relates_to": { rel_type: "m.annotation", event_id: eventId, key },
});
