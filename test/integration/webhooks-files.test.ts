import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MAX_FILES } from "../../functions/applications/webhooks/webhooks/files.ts";
import {
  WEBHOOK_MAX_BODY_BYTES,
  WEBHOOK_WAIT_MS,
} from "../../functions/applications/webhooks/webhooks/post.ts";
import { loadCrypto } from "../../functions/crypto/wasm.ts";
import { NO_DEAD_LETTERS, waitFor, waitUntilDrained } from "../support/appservice.ts";
import { gifHeader, pngHeader } from "../support/images.ts";
import { newWebhook, sendCommand, startWithWebhookRoom } from "../support/webhooks.ts";
import type { startAppserviceAndHomeserver } from "../support/with-homeserver.ts";
import { SERVER } from "../support/with-homeserver.ts";

const ROOM = `!hooks-files:${SERVER}`;
const MODERATOR = `@mod:${SERVER}`;
const hookUserPattern = (name: string) =>
  new RegExp(`^@_webhook_[0-9a-f]{12}_${name}:test\\.local$`);
const MXC = new RegExp(`^mxc://${SERVER.replace(".", "\\.")}/([A-Za-z0-9_-]+)$`);
const PNG = Buffer.concat([pngHeader(3, 2), Buffer.from("rest of the png")]);
const GIF = Buffer.concat([gifHeader(5, 4), Buffer.from("rest of the gif")]);
const PDF = Buffer.from("%PDF-1.7 a report");

/** A spec-shaped error: `errcode` and `error`, nothing less. */
const specError = (errcode: string) => ({ errcode, error: expect.any(String) });

describe("webhooks: files (multipart and JSON attachments) and ?wait=true", () => {
  let started: Awaited<ReturnType<typeof startAppserviceAndHomeserver>>;
  const hookMessages = (name: string) =>
    started.homeserver.sent.filter(
      (e) => e.roomId === ROOM && hookUserPattern(name).test(e.sender),
    );
  const newHook = (name: string) => newWebhook(started, name, MODERATOR, ROOM);
  const uploads = () =>
    started.homeserver.requests.filter(
      (r) => r.path.startsWith("/_matrix/media/v3/upload") && r.status === 200,
    );
  /** The media an `mxc://` URI names, as the homeserver stored it. */
  const mediaOf = (uri: unknown) => {
    const id = MXC.exec(String(uri))?.[1];
    return id === undefined ? undefined : started.homeserver.media.get(id);
  };
  const postForm = (url: string, form: FormData, headers: Record<string, string> = {}) =>
    fetch(url, { method: "POST", body: form, headers });
  const postJson = (url: string, body: unknown, headers: Record<string, string> = {}) =>
    fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: JSON.stringify(body),
    });
  const form = (fields: Record<string, string>, files: [string, Buffer, string][]) => {
    const body = new FormData();
    for (const [name, value] of Object.entries(fields)) body.append(name, value);
    for (const [name, bytes, type] of files) body.append("file", new Blob([bytes], { type }), name);
    return body;
  };

  beforeAll(async () => {
    started = await startWithWebhookRoom(ROOM, MODERATOR);
  });
  afterAll(() => started?.stop());

  it("multipart: the text, then each file uploaded once and posted as m.image (with w/h) or m.file, in order, as the form's username", async () => {
    const { url } = await newHook("shots");
    const uploadsBefore = uploads().length;
    const response = await postForm(
      url,
      form({ text: "**build 7** screenshots", username: "CI bot" }, [
        ["shot.png", PNG, "image/png"],
        ["report.pdf", PDF, "application/pdf"],
      ]),
    );
    expect(response.status).toBe(202);
    await waitFor(() => hookMessages("shots").length === 3);
    const [text, image, file] = hookMessages("shots").map((m) => m.content);
    expect(text).toMatchObject({
      msgtype: "m.text",
      body: "**build 7** screenshots",
      formatted_body: expect.stringContaining("<strong>build 7</strong>"),
    });
    expect(image).toEqual({
      msgtype: "m.image",
      body: "shot.png",
      filename: "shot.png",
      url: expect.stringMatching(MXC),
      info: { mimetype: "image/png", size: PNG.length, w: 3, h: 2 },
    });
    expect(file).toEqual({
      msgtype: "m.file",
      body: "report.pdf",
      filename: "report.pdf",
      url: expect.stringMatching(MXC),
      info: { mimetype: "application/pdf", size: PDF.length },
    });
    expect(mediaOf(image?.url)).toMatchObject({ bytes: PNG, contentType: "image/png" });
    expect(mediaOf(file?.url)).toMatchObject({ bytes: PDF, contentType: "application/pdf" });
    expect(uploads().length - uploadsBefore).toBe(2);
    const member = started.homeserver.state.get(
      `${ROOM}\nm.room.member\n${hookMessages("shots")[0]?.sender}`,
    );
    expect(member?.content).toMatchObject({ displayname: "CI bot" });
    expect(await waitUntilDrained(started.local)).toEqual(NO_DEAD_LETTERS);
  });

  it("JSON attachments: base64 files after the text, by type (m.image, m.audio); the same bytes again are not uploaded again; files alone post no text", async () => {
    const { url } = await newHook("attach");
    const uploadsBefore = uploads().length;
    const audio = Buffer.from("ID3 an mp3");
    const attachments = [
      { filename: "chart.gif", content_type: "image/gif", data: GIF.toString("base64") },
      { filename: "alarm.mp3", content_type: "audio/mpeg", data: audio.toString("base64") },
    ];
    expect((await postJson(url, { text: "alert", attachments })).status).toBe(202);
    expect((await postJson(url, { attachments: attachments.slice(0, 1) })).status).toBe(202);
    await waitFor(() => hookMessages("attach").length === 4);
    const contents = hookMessages("attach").map((m) => m.content);
    expect(contents.map((c) => [c.msgtype, c.body])).toEqual([
      ["m.text", "alert"],
      ["m.image", "chart.gif"],
      ["m.audio", "alarm.mp3"],
      ["m.image", "chart.gif"],
    ]);
    expect(contents[1]?.info).toEqual({ mimetype: "image/gif", size: GIF.length, w: 5, h: 4 });
    expect(contents[2]?.info).toEqual({ mimetype: "audio/mpeg", size: audio.length });
    // The second request's GIF is the first's media: one upload for it.
    expect(contents[3]?.url).toBe(contents[1]?.url);
    expect(uploads().length - uploadsBefore).toBe(2);
    expect(mediaOf(contents[2]?.url)).toMatchObject({ bytes: audio });
  });

  it("into an encrypted room, each file is encrypted before its upload and named by `file`, which a client decrypts", async () => {
    const room = `!hooks-files-encrypted:${SERVER}`;
    started.homeserver.createRoom(room, [MODERATOR, started.bot]);
    started.homeserver.setState(room, "m.room.power_levels", "", { users: { [MODERATOR]: 50 } });
    const { url } = await newWebhook(started, "sealed", MODERATOR, room);
    started.homeserver.setState(room, "m.room.encryption", "", {
      algorithm: "m.megolm.v1.aes-sha2",
    });
    const body = form({}, [["report.pdf", PDF, "application/pdf"]]);
    expect((await postForm(url, body)).status).toBe(202);
    const sent = () =>
      started.homeserver.sent.filter((e) => e.roomId === room && e.content.msgtype === "m.file");
    await waitFor(() => sent().length === 1);
    const content = sent()[0]?.content as Record<string, unknown>;
    expect(content.url).toBeUndefined();
    expect(content.info).toEqual({ mimetype: "application/pdf", size: PDF.length });
    const file = content.file as Record<string, unknown>;
    expect(file).toMatchObject({ url: expect.stringMatching(MXC), v: "v2" });
    const stored = mediaOf(file.url);
    expect(stored).toMatchObject({ contentType: "application/octet-stream" });
    expect(stored?.bytes?.includes(PDF)).toBe(false);
    const sdk = await loadCrypto();
    const attachment = new sdk.EncryptedAttachment(
      new Uint8Array(stored?.bytes as Buffer),
      JSON.stringify(file),
    );
    expect(Buffer.from(sdk.Attachment.decrypt(attachment)).equals(PDF)).toBe(true);
  });

  it("the type comes from the bytes: an SVG or HTML sent as an image is a file of bytes; w/h only from a sensible header", async () => {
    const { url } = await newHook("sniffed");
    const svg = Buffer.from(
      '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    );
    const html = Buffer.from("<!doctype html><script>alert(1)</script>");
    // A PNG header claiming 4 billion pixels wide.
    const huge = Buffer.concat([pngHeader(4_000_000_000, 1), Buffer.from("rest")]);
    const attachments = [
      ["logo.svg", svg, "image/svg+xml"],
      ["page.png", html, "image/png"],
      ["page.html", html, "text/html"],
      ["huge.png", huge, "image/png"],
      // A real GIF the sender mislabels: an image all the same, as the bytes say.
      ["chart.bin", GIF, "application/octet-stream"],
    ] as const;
    const response = await postJson(url, {
      attachments: attachments.map(([filename, bytes, type]) => ({
        filename,
        content_type: type,
        data: bytes.toString("base64"),
      })),
    });
    expect(response.status).toBe(202);
    await waitFor(() => hookMessages("sniffed").length === attachments.length);
    const contents = hookMessages("sniffed").map((m) => m.content);
    expect(contents.map((c) => [c.msgtype, (c.info as { mimetype: string }).mimetype])).toEqual([
      ["m.file", "application/octet-stream"],
      ["m.file", "application/octet-stream"],
      ["m.file", "application/octet-stream"],
      ["m.file", "application/octet-stream"],
      ["m.image", "image/gif"],
    ]);
    for (const content of contents.slice(0, 4)) {
      expect(content.info).not.toHaveProperty("w");
      // Stored as bytes, not as the page or image the sender named.
      expect(mediaOf(content.url)).toMatchObject({ contentType: "application/octet-stream" });
    }
    expect(contents[4]?.info).toEqual({ mimetype: "image/gif", size: GIF.length, w: 5, h: 4 });
    expect(mediaOf(contents[4]?.url)).toMatchObject({ contentType: "image/gif" });
  });

  it("Idempotency-Key with a form: the same form again (a new boundary) posts once and gets the first answer", async () => {
    const { url } = await newHook("idemform");
    const headers = { "idempotency-key": "upload-1" };
    const make = () => form({ text: "once" }, [["a.png", PNG, "image/png"]]);
    expect((await postForm(url, make(), headers)).status).toBe(202);
    const again = await postForm(url, make(), headers);
    expect(again.status).toBe(202);
    expect(again.headers.get("idempotency-replayed")).toBe("true");
    const other = await postForm(url, form({ text: "twice" }, []), headers);
    expect(other.status).toBe(422);
    expect(await waitUntilDrained(started.local)).toEqual(NO_DEAD_LETTERS);
    expect(hookMessages("idemform").map((m) => m.content.msgtype)).toEqual(["m.text", "m.image"]);
  });

  it("limits and bad input: over the upload limit → 413 and nothing posted; too many files or too large a body → 413; bad forms and attachments → 400; a form to a transformed webhook → 415", async () => {
    const { url } = await newHook("limits");
    const { homeserver } = started;
    // Bytes never uploaded before (the same bytes would be the media already there).
    const fresh = Buffer.concat([PNG, Buffer.from("over the limit")]);
    homeserver.maxUploadBytes = 10;
    try {
      const tooBig = await postForm(url, form({ text: "big" }, [["a.png", fresh, "image/png"]]));
      expect(tooBig.status).toBe(413);
      expect(await tooBig.json()).toEqual(specError("M_TOO_LARGE"));
    } finally {
      homeserver.maxUploadBytes = 50 * 1024 * 1024;
    }
    const many = Array.from({ length: MAX_FILES + 1 }, (_, i): [string, Buffer, string] => [
      `${i}.txt`,
      Buffer.from(`file ${i}`),
      "text/plain",
    ]);
    const tooMany = await postForm(url, form({}, many));
    expect(tooMany.status).toBe(413);
    expect(await tooMany.json()).toEqual(specError("M_TOO_LARGE"));
    const huge = await postJson(url, { text: "x".repeat(WEBHOOK_MAX_BODY_BYTES) });
    expect(huge.status).toBe(413);
    expect(await huge.json()).toEqual(specError("M_TOO_LARGE"));

    const bad: [string, string][] = [
      // No boundary, a truncated form, a boundary that never comes.
      ["multipart/form-data", "--x\r\n"],
      ["multipart/form-data; boundary=x", '--x\r\ncontent-disposition: form-data; name="text"\r\n'],
      ["multipart/form-data; boundary=y", "no parts at all"],
    ];
    for (const [type, body] of bad) {
      const response = await fetch(url, {
        method: "POST",
        headers: { "content-type": type },
        body,
      });
      expect(response.status, `${type} ${body}`).toBe(400);
      expect(await response.json()).toEqual(specError("M_INVALID_PARAM"));
    }
    for (const attachments of [
      "not an array",
      [{ content_type: "image/png", data: "not base64!" }],
      [{ content_type: "nonsense", data: "AAAA" }],
      [{ content_type: "image/png", data: "AAAA", filename: 7 }],
    ]) {
      const response = await postJson(url, { text: "x", attachments });
      expect(response.status, JSON.stringify(attachments)).toBe(400);
      expect(await response.json()).toEqual(specError("M_BAD_JSON"));
    }
    const empty = await postForm(url, form({ username: "nobody" }, []));
    expect(empty.status).toBe(400);
    expect(await empty.json()).toEqual(specError("M_BAD_JSON"));

    const transformed = await newHook("transformed");
    expect(
      await sendCommand(
        started,
        "!webhook transform transformed\n```js\nreturn { text: String(data.n) };\n```",
        MODERATOR,
        ROOM,
      ),
    ).toMatch(/your code/);
    const formToTransform = await postForm(transformed.url, form({ text: "x" }, []));
    expect(formToTransform.status).toBe(415);
    expect(await formToTransform.json()).toEqual(specError("M_UNRECOGNIZED"));
    expect((await postJson(transformed.url, { n: 5 })).status).toBe(202);
    await waitFor(() => hookMessages("transformed").length === 1);
    expect(await waitUntilDrained(started.local)).toEqual(NO_DEAD_LETTERS);
    expect(hookMessages("limits")).toEqual([]);
  });

  it("?wait=true: answered once the messages are in the room, with their event IDs; 504 past the wait, and the message still goes", async () => {
    const { url } = await newHook("waiter");
    const waited = await postForm(
      `${url}?wait=true`,
      form({ text: "deployed" }, [["d.png", PNG, "image/png"]]),
    );
    expect(waited.status).toBe(200);
    const body = (await waited.json()) as { event_id: string; event_ids: string[] };
    // In the room by the time of the answer, not later.
    const posted = hookMessages("waiter");
    expect(posted.map((m) => m.content.msgtype)).toEqual(["m.text", "m.image"]);
    expect(body).toEqual({
      event_id: posted[0]?.eventId,
      event_ids: posted.map((m) => m.eventId),
    });

    // The homeserver rate-limits this webhook's sends for longer than the wait.
    const { homeserver } = started;
    const userId = posted[0]?.sender as string;
    const isSend = (r: { method: string; path: string; query: Record<string, string> }) =>
      r.method === "PUT" && r.path.includes("/send/") && r.query.user_id === userId;
    const limited = { errcode: "M_LIMIT_EXCEEDED", error: "slow down", retry_after_ms: 1000 };
    homeserver.cue(isSend, { status: 429, body: limited }, 1000);
    const startedAt = Date.now();
    const key = { "idempotency-key": "late-1" };
    const late = await postJson(`${url}?wait=true`, { text: "late" }, key);
    expect(late.status).toBe(504);
    expect(await late.json()).toEqual(specError("M_UNKNOWN"));
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(WEBHOOK_WAIT_MS);
    expect(hookMessages("waiter")).toHaveLength(2);
    homeserver.clearCues();
    // The 504 freed the key: the repeat asks for the same send and waits for it again.
    const repeat = await postJson(`${url}?wait=true`, { text: "late" }, key);
    expect(repeat.status).toBe(200);
    const lateMessage = hookMessages("waiter")[2];
    expect(lateMessage?.content.body).toBe("late");
    expect(await repeat.json()).toEqual({
      event_id: lateMessage?.eventId,
      event_ids: [lateMessage?.eventId],
    });
    expect(await waitUntilDrained(started.local)).toEqual(NO_DEAD_LETTERS);
    expect(hookMessages("waiter")).toHaveLength(3);
  });

  it("property: whatever the form fields and file parts, raw form bodies or JSON attachments, never a 5xx; an error is spec-shaped", async () => {
    const field = fc.oneof(fc.string(), fc.constantFrom("m.notice", "m.emote", "m.image", ""));
    const filePart = fc.record({
      name: fc.string({ maxLength: 300 }),
      type: fc.oneof(fc.constantFrom("image/png", "image/gif", "", "text/plain"), fc.string()),
      bytes: fc.oneof(
        fc.uint8Array({ maxLength: 64 }),
        fc.constantFrom(new Uint8Array(PNG), new Uint8Array(GIF)),
      ),
    });
    const formInput = fc.record({
      fields: fc.dictionary(
        fc.constantFrom("text", "html", "username", "msgtype", "plain", "other"),
        field,
      ),
      files: fc.array(filePart, { maxLength: 3 }),
    });
    const attachment = fc.oneof(
      fc.record({
        filename: fc.oneof(fc.string(), fc.integer()),
        content_type: fc.oneof(fc.constantFrom("image/png", "audio/ogg"), fc.string()),
        data: fc.oneof(
          fc.uint8Array({ maxLength: 48 }).map((b) => Buffer.from(b).toString("base64")),
          fc.string(),
        ),
      }),
      fc.anything(),
    );
    const jsonInput = fc.record({
      text: fc.oneof(fc.string(), fc.constant(undefined)),
      attachments: fc.oneof(fc.array(attachment, { maxLength: 3 }), fc.anything()),
    });
    const check = async (response: Response) => {
      const text = await response.text();
      expect(response.status, text).toBeLessThan(500);
      if (response.status >= 400) {
        expect(JSON.parse(text)).toMatchObject({
          errcode: expect.stringMatching(/^M_/),
          error: expect.any(String),
        });
      }
    };
    // Each run on a webhook of its own: its rate limit (a burst of 20) is not what is tested.
    let hook = await newHook("prop0");
    let used = 0;
    const nextUrl = async () => {
      if (++used > 15) {
        hook = await newHook(`prop${Math.random().toString(36).slice(2, 8)}`);
        used = 1;
      }
      return hook.url;
    };
    await fc.assert(
      fc.asyncProperty(formInput, async ({ fields, files }) => {
        const body = new FormData();
        for (const [name, value] of Object.entries(fields)) body.append(name, value);
        for (const file of files) {
          body.append("file", new Blob([file.bytes], { type: file.type }), file.name);
        }
        await check(await postForm(await nextUrl(), body));
      }),
      { numRuns: 15 },
    );
    await fc.assert(
      fc.asyncProperty(jsonInput, async (input) => {
        await check(await postJson(await nextUrl(), input));
      }),
      { numRuns: 15 },
    );
    // Raw bodies: pieces of a form's syntax in any order, with any bytes between.
    const piece = fc.oneof(
      fc.constantFrom(
        "--b\r\n",
        "--b--\r\n",
        "\r\n",
        "\r\n\r\n",
        'content-disposition: form-data; name="text"',
        'content-disposition: form-data; name="file"; filename="x.png"',
        "; filename*=UTF-8''%E2%82%AC.png",
        "content-type: image/png",
        "content-transfer-encoding: base64",
      ),
      fc.string({ maxLength: 20 }),
      fc.uint8Array({ maxLength: 20 }).map((b) => Buffer.from(b).toString("latin1")),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(piece, { maxLength: 12 }), async (pieces) => {
        const response = await fetch(await nextUrl(), {
          method: "POST",
          headers: { "content-type": "multipart/form-data; boundary=b" },
          body: Buffer.from(pieces.join(""), "latin1"),
        });
        await check(response);
      }),
      { numRuns: 15 },
    );
    expect(await waitUntilDrained(started.local)).toEqual(NO_DEAD_LETTERS);
  });
});
