import {
  type AppRequest,
  type Attachment,
  badJson,
  base64Attachment,
  cleanName,
  HomeserverRefused,
  imageInfo,
  MatrixError,
  MediaTooLarge,
  MIME_TYPE,
  type RoomMedia,
  roomIsEncrypted,
  type ServiceContext,
  tooLarge,
  uploadRoomMedia,
} from "../../../appservice/api.ts";
import { mediaTypeOf, readPayload } from "./message.ts";

/** The most files one request posts: each is a message of its own. */
export const MAX_FILES = 10;
/** The form fields a multipart request's message is read from (as a JSON payload's). */
const FORM_FIELDS = ["text", "plain", "html", "username", "msgtype"] as const;
const MAX_FILE_NAME = 255;

/** What a request carries: the payload its message is read from, and its files, in order. */
export interface WebhookRequest {
  payload: unknown;
  files: Attachment[];
}

const invalidForm = (why: string) =>
  new MatrixError(
    400,
    "M_INVALID_PARAM",
    `The body is not a valid multipart/form-data form: ${why}`,
  );

/** A `multipart/form-data` body: its text fields as a payload, its file parts as files. */
async function readForm(request: AppRequest): Promise<WebhookRequest> {
  let form: FormData;
  try {
    // The platform's parser (undici's): nothing added to the bundle.
    form = await new Response(request.bytes, {
      headers: { "content-type": request.headers["content-type"] ?? "" },
    }).formData();
  } catch (error) {
    throw invalidForm((error as Error).message);
  }
  const payload: Record<string, string> = {};
  const files: Attachment[] = [];
  for (const [name, value] of form) {
    if (typeof value !== "string") {
      const type = value.type.split(";")[0]?.trim().toLowerCase() ?? "";
      files.push({
        contentType: MIME_TYPE.test(type) ? type : "application/octet-stream",
        bytes: new Uint8Array(await value.arrayBuffer()),
        fileName: value.name,
      });
    } else if ((FORM_FIELDS as readonly string[]).includes(name) && !(name in payload)) {
      payload[name] = value;
    }
  }
  return { payload, files };
}

/** A JSON payload's `attachments`: files in base64. */
function attachmentsOf(payload: unknown): Attachment[] {
  const { attachments } = (
    payload !== null && typeof payload === "object" ? payload : {}
  ) as Record<string, unknown>;
  if (attachments === undefined) return [];
  if (!Array.isArray(attachments)) {
    throw badJson('"attachments" must be an array of {"filename", "content_type", "data"}');
  }
  return attachments.map(
    (attachment, i) => base64Attachment(attachment ?? null, `attachments[${i}]`) as Attachment,
  );
}

/**
 * The payload and files of a request: a multipart form's fields and file parts, or a JSON
 * payload and its `attachments`. A transformation takes JSON only, and posts no files.
 */
export async function readRequest(
  request: AppRequest,
  transformed: boolean,
): Promise<WebhookRequest> {
  const multipart = mediaTypeOf(request) === "multipart/form-data";
  if (multipart && transformed) {
    throw new MatrixError(
      415,
      "M_UNRECOGNIZED",
      "This webhook transforms JSON payloads: send the payload as JSON, without files",
    );
  }
  const read = multipart ? await readForm(request) : { payload: readPayload(request), files: [] };
  const files = transformed || multipart ? read.files : attachmentsOf(read.payload);
  if (files.length > MAX_FILES) {
    throw tooLarge(`A request posts at most ${MAX_FILES} files; this one has ${files.length}`);
  }
  return { payload: read.payload, files };
}

// Types a browser runs or renders as a page: never served as the sender says, unless the bytes
// are a raster image.
const ACTIVE_TYPE =
  /^(?:image\/|text\/html|application\/xhtml|text\/xml|application\/xml|[^/]+\/[^;]*\+xml|text\/javascript|application\/javascript)/;

/**
 * What a file is stored and posted as. An image only from its bytes: a PNG, GIF, JPEG or WebP
 * header with a sensible size (`w`, `h` from it); anything else the sender calls an image (an SVG,
 * HTML) and any active type is a file of bytes. Audio and video as the sender says.
 */
function kindOf(file: Attachment): {
  msgtype: string;
  contentType: string;
  w?: number;
  h?: number;
} {
  const image = imageInfo(file.bytes);
  if (image) return { msgtype: "m.image", contentType: image.mimetype, w: image.w, h: image.h };
  if (ACTIVE_TYPE.test(file.contentType)) {
    return { msgtype: "m.file", contentType: "application/octet-stream" };
  }
  const kind = file.contentType.split("/")[0];
  return {
    msgtype: kind === "video" || kind === "audio" ? `m.${kind}` : "m.file",
    contentType: file.contentType,
  };
}

/**
 * Uploads each file to the media repository (once per content: a repeat gets the same URI) and
 * gives the content of its message: `m.image`, `m.video`, `m.audio` or `m.file`, with `info`.
 * Into an encrypted room (`m.room.encryption`) each file is encrypted before its upload, as
 * clients do, uploaded without its name, and its message names it by `file` (the URI and the
 * keys) instead of `url`: the outbox encrypts the message itself. Over the homeserver's upload limit: 413.
 */
export async function uploadFiles(
  files: Attachment[],
  roomId: string,
  context: ServiceContext,
): Promise<Record<string, unknown>[]> {
  const contents: Record<string, unknown>[] = [];
  const refused = (what: string) =>
    new MatrixError(502, "M_UNKNOWN", `The homeserver refused to ${what}`);
  let encrypted = false;
  try {
    encrypted = files.length > 0 && (await roomIsEncrypted(context.homeserver, roomId));
  } catch (error) {
    if (error instanceof HomeserverRefused) throw refused("say whether the room is encrypted");
    throw error;
  }
  for (const file of files) {
    const name = cleanName(file.fileName ?? "", MAX_FILE_NAME) || "file";
    const { msgtype, contentType, ...size } = kindOf(file);
    let media: RoomMedia;
    try {
      media = await uploadRoomMedia(
        context.homeserver,
        file.bytes,
        { contentType, fileName: name },
        encrypted,
      );
    } catch (error) {
      if (error instanceof MediaTooLarge) throw tooLarge(`${name}: ${error.message}`);
      if (error instanceof HomeserverRefused) throw refused(`store ${name}`);
      throw error;
    }
    contents.push({
      msgtype,
      body: name,
      filename: name,
      ...media,
      info: { mimetype: contentType, size: file.bytes.byteLength, ...size },
    });
  }
  return contents;
}
