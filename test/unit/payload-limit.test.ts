import type { APIGatewayProxyEventV2 } from "aws-lambda";
import { describe, expect, it } from "vitest";
import { jsonBody, LAMBDA_EVENT_MAX_BYTES, MAX_BODY_BYTES } from "../../functions/handlers/http.ts";
import type { MatrixError } from "../../functions/shared/errors.ts";

/** A transaction request as API Gateway hands it to the function. */
const requestWith = (body: string): APIGatewayProxyEventV2 => ({
  version: "2.0",
  routeKey: "PUT /_matrix/app/v1/transactions/{txnId}",
  rawPath: "/_matrix/app/v1/transactions/1",
  rawQueryString: "",
  headers: { "content-type": "application/json", authorization: "Bearer token" },
  requestContext: {
    accountId: "000000000000",
    apiId: "api",
    domainName: "api.example",
    domainPrefix: "api",
    http: {
      method: "PUT",
      path: "/_matrix/app/v1/transactions/1",
      protocol: "HTTP/1.1",
      sourceIp: "192.0.2.1",
      userAgent: "Synapse",
    },
    requestId: "id",
    routeKey: "PUT /_matrix/app/v1/transactions/{txnId}",
    stage: "$default",
    time: "",
    timeEpoch: 0,
  },
  pathParameters: { txnId: "1" },
  body,
  isBase64Encoded: false,
});

const errorOf = (f: () => unknown) => {
  try {
    f();
    return undefined;
  } catch (error) {
    return `${(error as MatrixError).status} ${(error as MatrixError).errcode}`;
  }
};

describe("the request size Lambda can be given", () => {
  // 4 MB of JSON: far below the body limit, but every `"` doubles in the event.
  const strings = (count: number) => JSON.stringify({ events: [], pad: Array(count).fill("") });

  it("refuses with 413 M_TOO_LARGE a body whose escaped event is over Lambda's limit", () => {
    const body = strings(1_400_000);
    expect(Buffer.byteLength(body)).toBeLessThan(MAX_BODY_BYTES);
    expect(Buffer.byteLength(JSON.stringify(requestWith(body)))).toBeGreaterThan(
      LAMBDA_EVENT_MAX_BYTES,
    );
    expect(errorOf(() => jsonBody(requestWith(body)))).toBe("413 M_TOO_LARGE");
  });

  it("takes a body of the same size that escaping does not grow", () => {
    const body = JSON.stringify({ events: [], pad: Array(1_400_000).fill(0) });
    expect(Buffer.byteLength(body)).toBeGreaterThan(2_800_000);
    expect(errorOf(() => jsonBody(requestWith(body)))).toBeUndefined();
  });

  it("takes an ordinary transaction: 100 events of about 1 KB", () => {
    const events = Array.from({ length: 100 }, (_, i) => ({
      event_id: `$${i}`,
      room_id: "!r:example.org",
      type: "m.room.message",
      sender: "@a:example.org",
      content: { msgtype: "m.text", body: "x".repeat(900) },
    }));
    expect(errorOf(() => jsonBody(requestWith(JSON.stringify({ events }))))).toBeUndefined();
  });
});
