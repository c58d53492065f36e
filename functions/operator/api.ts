import * as z from "zod/mini";
import { OPERATOR_PATH } from "../appservice/protocol/routes.ts";
import { badJson, MatrixError, parseJson, unrecognized } from "../shared/errors.ts";
import type { Log } from "../shared/log.ts";
import { authenticateOperator, RequestBudget } from "./access.ts";
import type { Operator, OperatorConsole, Selection } from "./console.ts";
import { OPERATOR_PAGE, OPERATOR_PAGE_HEADERS } from "./page.ts";

const OPERATOR_PAGE_PATH = OPERATOR_PATH;
const OPERATOR_API_PATH = `${OPERATOR_PATH}/api`;

export interface OperatorRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  /** Lower-case names. */
  headers: Record<string, string>;
  body: string;
  sourceIp: string;
}

export interface OperatorResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

export interface OperatorApiDeps {
  console: OperatorConsole;
  adminToken: string;
  /** The admin token's requests. */
  budget: RequestBudget;
  /**
   * Requests without the admin token, apart: a wrong token spending the right one's budget
   * would lock the operator out. @default a `RequestBudget` of its own
   */
  refusals?: RequestBudget;
  log: Log;
}

/** `GET …/sections/{id}`: an application's section, by its (plain) ID. */
const SECTION_PATH = new RegExp(`^GET ${OPERATOR_API_PATH}/sections/([a-z0-9-]{1,64})$`);

const API_HEADERS = {
  "content-type": "application/json",
  "cache-control": "no-store",
  "x-content-type-options": "nosniff",
};
const json = (status: number, body: unknown, headers = {}): OperatorResponse => ({
  status,
  headers: { ...API_HEADERS, ...headers },
  body: JSON.stringify(body),
});

const direction = z.enum(["inbound", "outbound"]);
const text = (max: number) => z.string().check(z.minLength(1), z.maxLength(max));
const selection = z.union([
  z.strictObject({
    direction,
    ids: z.array(text(200)).check(z.minLength(1), z.maxLength(1000)),
  }),
  z.strictObject({ direction, room: text(1000) }),
  z.strictObject({ direction, all: z.literal(true) }),
]);

/** A name the operator gives (`X-Operator`), for the log: printable, short. */
const operatorName = (value: string | undefined) => {
  const name = value?.replace(/[^\p{L}\p{N} ._@-]/gu, "").slice(0, 64);
  return name ? { name } : {};
};

function parseSelection(body: string): Selection {
  const parsed = selection.safeParse(parseJson(body, "The request body is not valid JSON"));
  if (!parsed.success) {
    throw badJson(
      'Expected {"direction": "inbound"|"outbound"} with one of "ids": [...], "room": "…" or "all": true',
    );
  }
  return parsed.data as Selection;
}

/**
 * The console over HTTP: `GET /admin` is the page (no token: it asks for one); every request
 * under `/admin/api/` needs the admin token, within the request budget.
 */
export type OperatorApi = (request: OperatorRequest) => Promise<OperatorResponse>;

export function createOperatorApi({
  console,
  adminToken,
  budget,
  refusals = new RequestBudget(),
  log,
}: OperatorApiDeps): OperatorApi {
  const route = async (request: OperatorRequest, operator: Operator): Promise<unknown> => {
    const action = `${request.method.toUpperCase()} ${request.path}`;
    switch (action) {
      case `GET ${OPERATOR_API_PATH}/status`:
        return console.status();
      case `GET ${OPERATOR_API_PATH}/traffic`:
        return console.traffic();
      case `GET ${OPERATOR_API_PATH}/dead-letters`: {
        const which = direction.safeParse(request.query.direction);
        if (request.query.direction !== undefined && !which.success) {
          throw badJson('direction must be "inbound" or "outbound"');
        }
        return {
          deadLetters: await console.listDeadLetters({
            ...(which.success && { direction: which.data }),
            ...(request.query.room && { room: request.query.room }),
          }),
        };
      }
      case `POST ${OPERATOR_API_PATH}/dead-letters/replay`:
        return console.replay(parseSelection(request.body), operator);
      case `POST ${OPERATOR_API_PATH}/dead-letters/discard`:
        return console.discard(parseSelection(request.body), operator);
      case `GET ${OPERATOR_API_PATH}/sections`:
        return { sections: console.sections() };
      default: {
        const id = SECTION_PATH.exec(action)?.[1];
        const rows = id === undefined ? undefined : await console.sectionRows(id);
        if (!rows) throw unrecognized(404, "Unrecognized request");
        return { rows };
      }
    }
  };

  return async (request: OperatorRequest): Promise<OperatorResponse> => {
    if (request.path === OPERATOR_PAGE_PATH) {
      if (request.method.toUpperCase() !== "GET") {
        return json(405, { errcode: "M_UNRECOGNIZED", error: "Method not allowed" });
      }
      return { status: 200, headers: OPERATOR_PAGE_HEADERS, body: OPERATOR_PAGE };
    }
    try {
      // Compared first (constant time, a hash of a short header), so that the bucket charged is
      // the one of who asks.
      let refused: MatrixError | undefined;
      try {
        authenticateOperator(request.headers.authorization, adminToken);
      } catch (error) {
        if (!(error instanceof MatrixError)) throw error;
        refused = error;
      }
      const waitMs = (refused ? refusals : budget).take();
      if (waitMs !== undefined) {
        return json(
          429,
          { errcode: "M_LIMIT_EXCEEDED", error: "Too many requests", retry_after_ms: waitMs },
          { "retry-after": String(Math.ceil(waitMs / 1000)) },
        );
      }
      if (refused) throw refused;
      const operator: Operator = {
        ...operatorName(request.headers["x-operator"]),
        sourceIp: request.sourceIp,
        ...(request.headers["user-agent"] && {
          userAgent: request.headers["user-agent"].slice(0, 200),
        }),
      };
      return json(200, await route(request, operator));
    } catch (error) {
      if (error instanceof MatrixError) return json(error.status, error.body);
      log.error("operator console request failed", { path: request.path, error });
      return json(500, { errcode: "M_UNKNOWN", error: "Internal server error" });
    }
  };
}
