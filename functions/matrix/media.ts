import { sha256 } from "../shared/hash.ts";
import type { AppDataStore } from "../store/app-data.ts";
import { callBefore } from "./bounded-call.ts";
import {
  type ClientServerRequest,
  type ClientServerResponse,
  type HomeserverClient,
  HomeserverRefused,
  matrixError,
  ResponseTooLarge,
} from "./request.ts";
import {
  createMediaRequest,
  downloadMediaRequest,
  mediaConfigRequest,
  uploadMediaRequest,
} from "./requests.ts";

/** What `uploadMedia` is given: the bytes, or a stream of them (read whole: they are hashed). */
export type MediaContent = Uint8Array | AsyncIterable<Uint8Array>;

/**
 * Uploads are the bot's: the same bytes are one media whoever needs them, and only the media's
 * creator may upload to a created URI.
 */
export interface UploadOptions {
  contentType: string;
  fileName?: string;
}

export interface DownloadedMedia {
  bytes: Uint8Array;
  contentType?: string;
  fileName?: string;
}

/** The media over the homeserver's upload limit, or over a download's `maxBytes`. */
export class MediaTooLarge extends Error {
  override name = "MediaTooLarge";
}

/** A download's cap when the caller sets none: Synapse's default upload limit. */
export const DEFAULT_DOWNLOAD_MAX_BYTES = 50 * 1024 * 1024;
/** How long the homeserver's upload limit is trusted before it is read again. */
const CONFIG_TTL_MS = 10 * 60_000;
/** sha256(bytes) → `Pending`. */
const MEDIA_RECORDS = "media";
/** A media record: `uploaded` false while a created URI awaits its bytes. */
type Pending = { uri: string; uploaded: boolean };

const ok = (response: ClientServerResponse) => response.status >= 200 && response.status < 300;

/**
 * An endpoint the homeserver does not have (older than the Matrix version that added it): an
 * `M_UNRECOGNIZED`, or a 404/405 that is no Matrix error at all (a proxy's page).
 */
const unsupported = (response: ClientServerResponse) => {
  const { errcode } = matrixError(response.body);
  return (
    errcode === "M_UNRECOGNIZED" ||
    ((response.status === 404 || response.status === 405) && errcode === undefined)
  );
};

const MXC = /^mxc:\/\/([A-Za-z0-9.:[\]-]+)\/([A-Za-z0-9_-]+)$/;

/** `serverName`/`mediaId` of an `mxc://` URI; an error for anything else. */
export function parseMxc(uri: string): { serverName: string; mediaId: string } {
  const match = MXC.exec(uri);
  if (!match) throw new RangeError(`Not an mxc:// URI: ${JSON.stringify(uri.slice(0, 100))}`);
  return { serverName: match[1] as string, mediaId: match[2] as string };
}

/** The file name a `Content-Disposition` header gives (RFC 6266: `filename*` first). */
export function fileNameOf(disposition: string | undefined): string | undefined {
  if (!disposition) return undefined;
  const extended = /filename\*\s*=\s*(?:UTF-8|utf-8)''([^;]+)/.exec(disposition)?.[1];
  if (extended) {
    try {
      return decodeURIComponent(extended.trim());
    } catch {
      // A bad escape: the plain parameter, if any.
    }
  }
  const plain = /filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]+))/.exec(disposition);
  return plain?.[1]?.replace(/\\(.)/g, "$1") ?? plain?.[2];
}

/**
 * The media repository: uploads that give the same bytes the same URI, downloads with a cap, and
 * the endpoints each homeserver has (authenticated media since Matrix 1.11, `create` since 1.7),
 * learnt once per process.
 */
export class MediaRepository {
  private authenticated = true;
  private createSupported = true;
  private limit: { bytes: number | undefined; until: number } | undefined;

  constructor(
    private readonly homeserver: HomeserverClient,
    private readonly botUserId: string,
    private readonly records: AppDataStore,
  ) {}

  private call(deadline: number, request: ClientServerRequest) {
    return callBefore(deadline, this.homeserver, this.botUserId, request);
  }

  /** `m.upload.size`, when the homeserver says. */
  private async uploadLimit(deadline: number): Promise<number | undefined> {
    if (this.limit && this.limit.until > Date.now()) return this.limit.bytes;
    let response = await this.call(deadline, mediaConfigRequest(this.authenticated));
    if (this.authenticated && unsupported(response)) {
      this.authenticated = false;
      response = await this.call(deadline, mediaConfigRequest(false));
    }
    const size = ok(response)
      ? (response.body as Record<string, unknown>)["m.upload.size"]
      : undefined;
    const bytes = typeof size === "number" && size > 0 ? size : undefined;
    this.limit = { bytes, until: Date.now() + CONFIG_TTL_MS };
    return bytes;
  }

  async upload(deadline: number, content: MediaContent, options: UploadOptions): Promise<string> {
    const limit = await this.uploadLimit(deadline);
    const bytes = await readWhole(content, limit);
    const hash = sha256(bytes);
    const record = await this.records.get(MEDIA_RECORDS, hash);
    if (record?.uploaded === true) return record.uri as string;
    const file = { bytes, type: options.contentType };
    let pending = record as Pending | undefined;
    if (!pending) {
      const created = await this.create(deadline);
      if (!created) {
        // No `create` (before Matrix 1.7): a repeat after a crash uploads again, to a new URI
        // that nothing records; the first URI recorded is the one every repeat gets.
        const response = await this.call(deadline, uploadMediaRequest(file, options.fileName));
        this.expectUploaded(response);
        const fresh = (response.body as { content_uri: string }).content_uri;
        return (await this.recordFirst(hash, { uri: fresh, uploaded: true })).uri;
      }
      pending = await this.recordFirst(hash, { uri: created, uploaded: false });
      if (pending.uploaded) return pending.uri;
    }
    let response = await this.putBytes(deadline, pending.uri, file, options.fileName);
    if (response.status === 404 && matrixError(response.body).errcode === "M_NOT_FOUND") {
      // The created URI expired unused (a crash a day ago): another, unless a concurrent upload
      // replaced it first.
      const created = await this.create(deadline);
      if (!created) throw new HomeserverRefused(`uploading to ${pending.uri}`, 404, response.body);
      const replacement = { uri: created, uploaded: false };
      pending = (await this.records.write([
        { collection: MEDIA_RECORDS, key: hash, value: replacement, ifEquals: pending },
      ]))
        ? replacement
        : ((await this.records.get(MEDIA_RECORDS, hash)) as Pending);
      if (pending.uploaded) return pending.uri;
      response = await this.putBytes(deadline, pending.uri, file, options.fileName);
    }
    // Already there: an earlier attempt, or a concurrent one, uploaded these bytes.
    if (matrixError(response.body).errcode !== "M_CANNOT_OVERWRITE_MEDIA")
      this.expectUploaded(response);
    await this.records.write([
      { collection: MEDIA_RECORDS, key: hash, value: { uri: pending.uri, uploaded: true } },
    ]);
    return pending.uri;
  }

  private putBytes(
    deadline: number,
    uri: string,
    file: { bytes: Uint8Array; type: string },
    fileName: string | undefined,
  ) {
    return this.call(deadline, uploadMediaRequest(file, fileName, parseMxc(uri)));
  }

  private expectUploaded(response: ClientServerResponse) {
    if (ok(response)) return;
    if (response.status === 413 || matrixError(response.body).errcode === "M_TOO_LARGE") {
      throw new MediaTooLarge(
        `the homeserver refused the upload as too large (${response.status})`,
      );
    }
    throw new HomeserverRefused("uploading media", response.status, response.body);
  }

  /** A new `mxc://` URI to upload to; undefined on a homeserver without `create`. */
  private async create(deadline: number): Promise<string | undefined> {
    if (!this.createSupported) return undefined;
    const response = await this.call(deadline, createMediaRequest());
    if (ok(response)) return (response.body as { content_uri: string }).content_uri;
    if (unsupported(response)) {
      this.createSupported = false;
      return undefined;
    }
    throw new HomeserverRefused("creating a media URI", response.status, response.body);
  }

  /** Records `value` for `hash` unless one is recorded already: the record that holds. */
  private async recordFirst(hash: string, value: Pending): Promise<Pending> {
    if (
      await this.records.write([{ collection: MEDIA_RECORDS, key: hash, value, ifAbsent: true }])
    ) {
      return value;
    }
    return ((await this.records.get(MEDIA_RECORDS, hash)) as Pending | undefined) ?? value;
  }

  async download(
    deadline: number,
    mxcUri: string,
    maxBytes = DEFAULT_DOWNLOAD_MAX_BYTES,
  ): Promise<DownloadedMedia | undefined> {
    const { serverName, mediaId } = parseMxc(mxcUri);
    const get = (authenticated: boolean) =>
      this.call(deadline, downloadMediaRequest(serverName, mediaId, maxBytes, authenticated));
    let response: ClientServerResponse;
    try {
      response = await get(this.authenticated);
      if (this.authenticated && unsupported(response)) {
        this.authenticated = false;
        response = await get(false);
      }
    } catch (error) {
      if (error instanceof ResponseTooLarge) {
        throw new MediaTooLarge(`${mxcUri} is over ${maxBytes} bytes`);
      }
      throw error;
    }
    if (response.status === 404) return undefined;
    if (!ok(response))
      throw new HomeserverRefused(`downloading ${mxcUri}`, response.status, response.body);
    const fileName = fileNameOf(response.contentDisposition);
    return {
      bytes: response.bytes ?? new Uint8Array(),
      ...(response.contentType && { contentType: response.contentType }),
      ...(fileName !== undefined && { fileName }),
    };
  }
}

/** The whole content, refused (`MediaTooLarge`) as soon as it is over `limit` bytes. */
async function readWhole(content: MediaContent, limit: number | undefined): Promise<Uint8Array> {
  const over = (length: number) =>
    new MediaTooLarge(
      `the media is over the homeserver's upload limit (m.upload.size ${limit} bytes; ${length}${content instanceof Uint8Array ? "" : " or more"} given)`,
    );
  if (content instanceof Uint8Array) {
    if (limit !== undefined && content.byteLength > limit) throw over(content.byteLength);
    return content;
  }
  const chunks: Uint8Array[] = [];
  let length = 0;
  for await (const chunk of content) {
    length += chunk.byteLength;
    if (limit !== undefined && length > limit) throw over(length);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}
