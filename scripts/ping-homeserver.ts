import type { Registration } from "../functions/appservice/registration.ts";

export interface PingResult {
  ok: boolean;
  message: string;
}

/**
 * Asks the homeserver to ping the appservice (`POST /_matrix/client/v1/appservice/{id}/ping`):
 * both directions at once. Says in plain words what worked or what to fix.
 */
export async function pingHomeserver(
  homeserverUrl: string,
  registration: Registration,
): Promise<PingResult> {
  const url = `${homeserverUrl.replace(/\/$/, "")}/_matrix/client/v1/appservice/${encodeURIComponent(registration.id)}/ping`;
  let response: Response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: {
        authorization: `Bearer ${registration.as_token}`,
        "content-type": "application/json",
      },
      body: JSON.stringify({ transaction_id: `ping-${Date.now()}` }),
      signal: AbortSignal.timeout(60_000),
    });
  } catch (error) {
    return {
      ok: false,
      message: `Could not reach the homeserver at ${homeserverUrl}: ${(error as Error).message}`,
    };
  }
  const body = (await response.json().catch(() => ({}))) as {
    duration_ms?: number;
    errcode?: string;
    error?: string;
    status?: number;
    body?: string;
  };
  if (response.ok) {
    return {
      ok: true,
      message: `The homeserver reached the appservice and back in ${body.duration_ms} ms.`,
    };
  }
  const explanations: Record<string, string> = {
    M_URL_NOT_SET:
      "The homeserver has no URL for this appservice: set `url` in the registration file it loaded, then restart it.",
    M_BAD_STATUS: `The homeserver reached the appservice, which answered HTTP ${body.status}${
      body.status === 403 || body.status === 401
        ? " (the homeserver's hs_token is not the appservice's)"
        : ""
    }: ${body.body ?? ""}`,
    M_CONNECTION_FAILED:
      "The homeserver could not connect to the appservice at its registered url: is it running, and reachable from the homeserver?",
    M_CONNECTION_TIMEOUT: "The homeserver connected to the appservice but got no answer in time.",
    M_FORBIDDEN: `The homeserver does not know appservice "${registration.id}" with this as_token: is this registration file the one it loaded?`,
    M_UNKNOWN_TOKEN:
      "The homeserver does not accept this as_token: is this registration file the one it loaded?",
  };
  const explanation =
    (body.errcode && explanations[body.errcode]) ??
    `${response.status} ${body.errcode ?? ""} ${body.error ?? ""}`;
  return { ok: false, message: explanation.trim() };
}
