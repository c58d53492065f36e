/** A request the scripted homeserver received (apart, so that its encryption part can read it). */
export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  authorization: string | undefined;
  /** JSON, parsed; undefined for none, and for a media upload's bytes (in `bytes`). */
  body: unknown;
  bytes?: Buffer;
  contentType?: string;
  at: number;
  /** The status it was answered with (undefined while pending or when it hung). */
  status?: number;
}
