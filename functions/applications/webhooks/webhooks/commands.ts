import { type ClientEvent, cleanName, type ServiceContext } from "../../../appservice/api.ts";
import { isExpired, parseDuration } from "./expiry.ts";
import { MODERATOR_LEVEL, powerLevel } from "./moderators.ts";
import { OUTBOUND_USAGE, onOutboundCommand, outboundListLines } from "./outbound.ts";
import { isPresetName, PRESET_NAMES, type PresetName } from "./preset-names.ts";
import {
  createWebhook,
  findWebhook,
  listWebhooks,
  removeWebhook,
  type Transformation,
  updateWebhook,
  type Webhook,
} from "./store.ts";
import { WEBHOOK_NAME as NAME } from "./text.ts";
import { webhookUserId } from "./user.ts";

const presetList = PRESET_NAMES.join(", ");

/** The largest transformation taken, in bytes. */
export const MAX_TRANSFORMATION_BYTES = 16 * 1024;

/** The options given, or undefined when one is unknown, repeated or lacks its value. */
function parseOptions(
  words: string[],
  allowed: Record<string, boolean> = {},
): Map<string, string> | undefined {
  const options = new Map<string, string>();
  for (let i = 0; i < words.length; i++) {
    const word = words[i] as string;
    const takesValue = allowed[word];
    if (takesValue === undefined || options.has(word)) return undefined;
    const value = takesValue ? words[++i] : "";
    if (value === undefined) return undefined;
    options.set(word, value);
  }
  return options;
}

/** The code of a message's code block (```…```), else every line after the command's. */
export function codeOf(body: string): string {
  const newline = body.indexOf("\n");
  if (newline < 0) return "";
  const afterCommand = body.slice(newline + 1);
  const fenced = /```[^\n]*\n([\s\S]*?)```/.exec(afterCommand);
  return (fenced ? (fenced[1] as string) : afterCommand).trim();
}

/**
 * A state event the bot puts in the direct message room it creates for a webhook's URL, naming
 * the command that made the webhook: when the homeserver hands it back, the bot sends the URL
 * there (the room's ID is only known then).
 */
export const URL_MESSAGE_REQUEST = "io.github.matrix_serverless_appservice.webhook_url";

export const isWebhookCommand = (body: unknown): body is string =>
  typeof body === "string" && /^!webhook(\s|$)/.test(body);

const day = (ms: number) => new Date(ms).toISOString().slice(0, 10);

/** A webhook's line in `!webhook list`. */
function describe(webhook: Webhook, now: number): string {
  const { transformation, expiresAt } = webhook;
  return [
    `created ${day(webhook.createdAt)} by ${webhook.createdBy}`,
    ...(webhook.msgtype === "m.notice" ? ["notices"] : []),
    ...(transformation
      ? [
          "preset" in transformation
            ? `preset ${transformation.preset}`
            : `transformed (set by ${transformation.setBy})`,
        ]
      : []),
    ...(expiresAt === undefined
      ? []
      : [
          `${isExpired(webhook, now) ? "expired" : "expires"} ${new Date(expiresAt).toISOString()}`,
        ]),
  ].join(", ");
}

// Derived from the command itself: a re-run of its handler hands out the same URL.
const webhookSecret = (context: ServiceContext, commandEventId: string) =>
  context.deriveSecret(`webhook\n${commandEventId}`);

export const isUrlMessageRequest = (event: ClientEvent, botUserId: string): boolean =>
  event.type === URL_MESSAGE_REQUEST && event.sender === botUserId;

/** Sends a webhook's URL into the direct message room the bot made for it. */
export async function onUrlMessageRequest(
  event: ClientEvent,
  context: ServiceContext,
): Promise<void> {
  const command = String(event.content.command);
  const id = webhookSecret(context, command);
  const webhook = await findWebhook(context.data, id);
  await context.actions.sendNotice(
    event.room_id,
    webhook
      ? `Webhook ${webhook.name} of ${webhook.roomId}: POST to this URL to post there; keep it secret:\n${context.publicBaseUrl}/webhook/${id}`
      : "That webhook was removed before its URL could be sent.",
  );
}

/** What a command's handler is given once its words fit its usage. */
interface Given {
  /** Only read by commands that take a name, for which it was checked. */
  name: string;
  options: Map<string, string>;
  preset: PresetName | undefined;
  /** The message's whole body: `transform` reads its code from the lines after the command. */
  body: string;
  usage: string;
  reply: (text: string) => Promise<unknown>;
}

type Handler<A> = (args: A, event: ClientEvent, context: ServiceContext) => Promise<unknown>;

/**
 * The commands, in the order `!webhook help` lists them: adding one is adding an entry. A command
 * states its usage, whether it takes a name and its options (with whether each has a value): what
 * it is given is checked against these before anything is read or stored, so no argument can make
 * storage refuse it. One that checks its own arguments (`out`) is handed its words instead.
 */
type Command = { help: string[] } & (
  | {
      ownArguments?: false;
      takesName: boolean;
      options?: Record<string, boolean>;
      usage: string;
      handler: Handler<Given>;
    }
  | { ownArguments: true; handler: Handler<string[]> }
);

const table: Record<string, Command> = {
  new: {
    takesName: true,
    options: { "--notice": false, "--expires": true, "--preset": true },
    usage:
      "!webhook new <name> [--notice] [--expires 30d] [--preset <preset>] — a name of 1 to 32 of a-z 0-9 . _ = -",
    help: [
      "!webhook new <name> — create one; I send you its secret URL in a direct message",
      `  --notice, --expires 30d, --preset <${presetList}>`,
    ],
    handler: onNew,
  },
  transform: {
    takesName: true,
    options: { "--preset": true, "--remove": false },
    usage: "!webhook transform <name> + a code block, --preset <preset> or --remove",
    help: [
      "!webhook transform <name> + a code block — JavaScript from the payload (`data`) to {text, html?, msgtype?} or nothing",
    ],
    handler: onTransform,
  },
  list: {
    takesName: false,
    usage: "!webhook list",
    help: ["!webhook list — the webhooks of this room"],
    handler: onList,
  },
  remove: {
    takesName: true,
    usage: "!webhook remove <name> — the name of one of this room's webhooks",
    help: ["!webhook remove <name> — delete one; its URL stops working at once"],
    handler: onRemove,
  },
  out: {
    ownArguments: true,
    help: [`${OUTBOUND_USAGE} — each request signed with a secret I send you in a direct message`],
    handler: (words, event, context) => onOutboundCommand(event, words, context),
  },
  help: {
    takesName: false,
    usage: "!webhook help",
    help: [],
    handler: ({ reply }) => reply(HELP),
  },
};
// A Map, so that a word such as "constructor" is no command.
const COMMANDS = new Map(Object.entries(table));

const HELP: string = [
  "Webhooks post messages into this room from anywhere that can make an HTTP request.",
  ...[...COMMANDS.values()].flatMap((command) => command.help),
  'POST JSON {"text": "…", "username"?: "…", "html"?: "…", "msgtype"?: "m.notice"} or plain text to the URL.',
  "Only room moderators (power level 50 or more) can use these commands.",
].join("\n");

/** Answers one `!webhook …` message in its room. */
export async function onWebhookCommand(event: ClientEvent, context: ServiceContext): Promise<void> {
  const roomId = event.room_id;
  const reply = (text: string) => context.actions.sendNotice(roomId, text);
  const body = String(event.content.body);
  // `transform` takes code after its first line; every other command is its words.
  const commandWords = body.trim().split(/\s+/);
  const words =
    commandWords[1] === "transform"
      ? (body.split("\n")[0] as string).trim().split(/\s+/)
      : commandWords;
  const [, command = "help", name, ...rest] = words;

  const level = await powerLevel(context.homeserver, roomId, event.sender);
  if (level < MODERATOR_LEVEL) {
    await reply(
      `Sorry ${event.sender}, only room moderators (power level ${MODERATOR_LEVEL} or more) can manage webhooks here.`,
    );
    return;
  }
  const spec = COMMANDS.get(command);
  if (!spec) {
    await reply(`Unknown command "${cleanName(command, 32)}". Try !webhook help.`);
    return;
  }
  if (spec.ownArguments) {
    await spec.handler(words.slice(2), event, context);
    return;
  }
  const options = parseOptions(rest, spec.options);
  const argumentsFit =
    options !== undefined && (spec.takesName ? name !== undefined && NAME.test(name) : !name);
  if (!argumentsFit) {
    await reply(`Usage: ${spec.usage}`);
    return;
  }
  const preset = options.get("--preset");
  if (preset !== undefined && !isPresetName(preset)) {
    await reply(`There is no preset "${cleanName(preset, 32)}": the presets are ${presetList}.`);
    return;
  }
  const given = { name: name as string, options, preset, body, usage: spec.usage, reply };
  await spec.handler(given, event, context);
}

async function onNew(
  { name, options, preset, reply }: Given,
  event: ClientEvent,
  context: ServiceContext,
): Promise<void> {
  const roomId = event.room_id;
  const createdAt = event.origin_server_ts ?? Date.now();
  const expires = options.get("--expires");
  const lifetime = expires === undefined ? undefined : parseDuration(expires);
  if (expires !== undefined && lifetime === undefined) {
    await reply("--expires takes up to a year: 30d, 12h, 2w (s, m, h, d, w).");
    return;
  }
  const id = webhookSecret(context, event.event_id);
  const outcome = await createWebhook(context.data, id, {
    roomId,
    name,
    createdAt,
    createdBy: event.sender,
    commandEventId: event.event_id,
    userId: webhookUserId(context, roomId, name),
    ...(options.has("--notice") && { msgtype: "m.notice" }),
    ...(lifetime !== undefined && { expiresAt: createdAt + lifetime }),
    ...(preset !== undefined && { transformation: { preset } }),
  });
  if (outcome === "exists") {
    await reply(`This room already has a webhook named ${name}: remove it first.`);
    return;
  }
  context.log.info("webhook created", { roomId, name, by: event.sender });
  // The URL to its creator alone: whoever holds it posts here, so not every member should.
  await context.actions.createRoom({
    invite: [event.sender],
    isDirect: true,
    preset: "private_chat",
    name: `Webhook ${name}`,
    topic: `The URL of webhook ${name} of ${roomId}`,
    initialState: [
      { type: URL_MESSAGE_REQUEST, state_key: "", content: { command: event.event_id } },
    ],
  });
  await reply(
    `Webhook ${name} created. I sent its URL to ${event.sender} in a direct message: accept my invite to read it.`,
  );
}

async function onList(
  { reply }: Given,
  event: ClientEvent,
  context: ServiceContext,
): Promise<void> {
  const [webhooks, outbound] = await Promise.all([
    listWebhooks(context.data, event.room_id),
    outboundListLines(context, event.room_id),
  ]);
  await reply(
    webhooks.length + outbound.length === 0
      ? "This room has no webhooks. Create one with !webhook new <name>."
      : [
          "Webhooks in this room:",
          ...webhooks.map((w) => `• ${w.name} — ${describe(w, Date.now())}`),
          ...outbound,
        ].join("\n"),
  );
}

async function onTransform(
  { name, options, preset, body, usage, reply }: Given,
  event: ClientEvent,
  context: ServiceContext,
): Promise<void> {
  const roomId = event.room_id;
  const code = codeOf(body);
  const chosen = [code !== "", preset !== undefined, options.has("--remove")].filter(Boolean);
  if (chosen.length !== 1) {
    await reply(`Usage: ${usage}`);
    return;
  }
  if (Buffer.byteLength(code) > MAX_TRANSFORMATION_BYTES) {
    await reply(`That transformation is over ${MAX_TRANSFORMATION_BYTES} bytes.`);
    return;
  }
  const transformation: Transformation | undefined = code
    ? { code, setBy: event.sender }
    : preset !== undefined
      ? { preset }
      : undefined;
  const updated = await updateWebhook(context.data, roomId, name, (webhook) => {
    const { transformation: _previous, ...rest } = webhook;
    return transformation ? { ...rest, transformation } : rest;
  });
  if (updated)
    context.log.info("webhook transformation changed", { roomId, name, by: event.sender });
  await reply(
    !updated
      ? `This room has no webhook named ${name}.`
      : transformation
        ? `Webhook ${name} now transforms each payload with ${"preset" in transformation ? `the ${transformation.preset} preset` : "your code"}.`
        : `Webhook ${name} posts payloads as they are.`,
  );
}

async function onRemove(
  { name, reply }: Given,
  event: ClientEvent,
  context: ServiceContext,
): Promise<void> {
  const roomId = event.room_id;
  const removed = await removeWebhook(context.data, roomId, name);
  if (removed) context.log.info("webhook removed", { roomId, name, by: event.sender });
  await reply(
    removed
      ? `Webhook ${name} removed: its URL no longer works.`
      : `This room has no webhook named ${name}.`,
  );
}
