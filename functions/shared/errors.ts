/** A Matrix error: an HTTP status and the spec's `{"errcode","error"}` body. */
export class MatrixError extends Error {
  constructor(
    readonly status: number,
    readonly errcode: string,
    message: string,
  ) {
    super(message);
    this.name = "MatrixError";
  }

  get body(): { errcode: string; error: string } {
    return { errcode: this.errcode, error: this.message };
  }
}

export const unauthorized = (message: string) => new MatrixError(401, "M_UNAUTHORIZED", message);
export const forbidden = (message: string) => new MatrixError(403, "M_FORBIDDEN", message);
export const notJson = (message: string) => new MatrixError(400, "M_NOT_JSON", message);
/** `text` parsed as JSON; 400 `M_NOT_JSON` with `message` when it is not. */
export function parseJson(text: string, message: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw notJson(message);
  }
}
export const badJson = (message: string) => new MatrixError(400, "M_BAD_JSON", message);
export const tooLarge = (message: string) => new MatrixError(413, "M_TOO_LARGE", message);
export const unrecognized = (status: 404 | 405, message: string) =>
  new MatrixError(status, "M_UNRECOGNIZED", message);
/** A dependency (storage, queue) failed: the homeserver should retry later. */
export const unavailable = (message: string) => new MatrixError(503, "M_UNKNOWN", message);
