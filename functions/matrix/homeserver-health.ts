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

/**
 * Asks the homeserver to ping the appservice (`POST /_matrix/client/v1/appservice/{id}/ping`),
 * which checks both directions; a homeserver too old for that is asked for its versions.
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
  let response: Response;
  try {
    response = await fetch(
      `${base}/_matrix/client/v1/appservice/${encodeURIComponent(appserviceId)}/ping`,
      {
        method: "POST",
        headers: { authorization: `Bearer ${asToken}`, "content-type": "application/json" },
        body: JSON.stringify({ transaction_id: `console-${Date.now()}` }),
        redirect: "manual",
        signal: AbortSignal.timeout(TIMEOUT_MS),
      },
    );
  } catch (error) {
    return unreachable(error);
  }
  const body = (await response.json().catch(() => ({}))) as {
    duration_ms?: number;
    errcode?: string;
    error?: string;
  };
  if (response.ok) {
    return {
      reachable: true,
      checkedWith: "ping",
      ...(typeof body.duration_ms === "number" && { roundTripMs: body.duration_ms }),
    };
  }
  if (body.errcode !== "M_UNRECOGNIZED" || (response.status !== 400 && response.status !== 404)) {
    return {
      reachable: true,
      checkedWith: "ping",
      detail: `ping failed: ${response.status} ${body.errcode ?? ""} ${body.error ?? ""}`.trim(),
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
