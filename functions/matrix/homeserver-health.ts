/** What the operator sees of the homeserver. */
export interface HomeserverHealth {
  /** It answered. */
  reachable: boolean;
  /** `ping`: it pinged the appservice (Matrix v1.7); `versions`: it predates the ping. */
  checkedWith: "ping" | "versions" | "none";
  /** The ping's round trip, homeserver → appservice → homeserver. */
  roundTripMs?: number;
  /** What went wrong, or what the check could not tell. */
  detail?: string;
}

const TIMEOUT_MS = 5_000;

/** The homeserver's answer to the appservice ping, or why it could not be asked. */
export type PingAnswer =
  | {
      status: number;
      ok: boolean;
      body: {
        duration_ms?: number;
        errcode?: string;
        error?: string;
        status?: number;
        body?: string;
      };
    }
  | { failure: Error };

/**
 * `POST /_matrix/client/v1/appservice/{id}/ping` (Matrix v1.7): the homeserver pings the
 * appservice, which checks both directions at once.
 */
export async function pingAppservice(
  homeserverUrl: string,
  appserviceId: string,
  asToken: string,
  { timeoutMs, transactionId }: { timeoutMs: number; transactionId: string },
): Promise<PingAnswer> {
  const base = homeserverUrl.replace(/\/+$/, "");
  try {
    const response = await fetch(
      `${base}/_matrix/client/v1/appservice/${encodeURIComponent(appserviceId)}/ping`,
      {
        method: "POST",
        headers: { authorization: `Bearer ${asToken}`, "content-type": "application/json" },
        body: JSON.stringify({ transaction_id: transactionId }),
        redirect: "manual",
        signal: AbortSignal.timeout(timeoutMs),
      },
    );
    const body = (await response.json().catch(() => ({}))) as Extract<
      PingAnswer,
      { body: unknown }
    >["body"];
    return { status: response.status, ok: response.ok, body };
  } catch (error) {
    return { failure: error as Error };
  }
}

/** Homeservers before the ping answer its unknown endpoint so (Synapse: 400, newer ones 404). */
export const predatesPing = (answer: PingAnswer): boolean =>
  "status" in answer &&
  answer.body.errcode === "M_UNRECOGNIZED" &&
  (answer.status === 400 || answer.status === 404);

/**
 * Asks the homeserver to ping the appservice; a homeserver too old for that is asked for its
 * versions.
 */
export async function checkHomeserver(
  homeserverUrl: string,
  appserviceId: string,
  asToken: string,
): Promise<HomeserverHealth> {
  const base = homeserverUrl.replace(/\/+$/, "");
  const unreachable = (error: unknown): HomeserverHealth => ({
    reachable: false,
    checkedWith: "none",
    detail: `unreachable: ${(error as Error).message}`,
  });
  const answer = await pingAppservice(base, appserviceId, asToken, {
    timeoutMs: TIMEOUT_MS,
    transactionId: `console-${Date.now()}`,
  });
  if ("failure" in answer) return unreachable(answer.failure);
  const { body } = answer;
  if (answer.ok) {
    return {
      reachable: true,
      checkedWith: "ping",
      ...(typeof body.duration_ms === "number" && { roundTripMs: body.duration_ms }),
    };
  }
  if (!predatesPing(answer)) {
    return {
      reachable: true,
      checkedWith: "ping",
      detail: `ping failed: ${answer.status} ${body.errcode ?? ""} ${body.error ?? ""}`.trim(),
    };
  }
  try {
    const versions = await fetch(`${base}/_matrix/client/versions`, {
      redirect: "manual",
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    return {
      reachable: versions.ok,
      checkedWith: "versions",
      detail: versions.ok
        ? "no appservice ping (before Matrix v1.7): only its reachability is known"
        : `GET /_matrix/client/versions answered ${versions.status}`,
    };
  } catch (error) {
    return unreachable(error);
  }
}
