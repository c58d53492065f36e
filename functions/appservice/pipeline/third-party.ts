import { MatrixError } from "../../shared/errors.ts";
import type { ThirdParty } from "../application.ts";

const notFound = (message: string) => new MatrixError(404, "M_NOT_FOUND", message);

export type ThirdPartyQuery =
  | { kind: "protocol"; protocol: string }
  | { kind: "user" | "location"; protocol: string; fields: Record<string, string> }
  | { kind: "userById"; userId: string | undefined }
  | { kind: "locationByAlias"; alias: string | undefined };

/**
 * Answers a third-party lookup from what the application provides, in the spec's shapes; an
 * unknown protocol or no result is 404 `M_NOT_FOUND`, as `protocols.yaml` says.
 */
export async function thirdPartyLookup(
  query: ThirdPartyQuery,
  thirdParty: ThirdParty | undefined,
): Promise<unknown> {
  const protocols = thirdParty?.protocols ?? {};
  const known = (protocol: string) => {
    if (!Object.hasOwn(protocols, protocol)) throw notFound(`Unknown protocol ${protocol}`);
  };
  const results = <T>(list: T[] | undefined, what: string): T[] => {
    if (!list || list.length === 0) throw notFound(`No ${what} found`);
    return list;
  };
  switch (query.kind) {
    case "protocol":
      known(query.protocol);
      return protocols[query.protocol];
    case "user":
      known(query.protocol);
      return results(await thirdParty?.users?.(query.protocol, query.fields), "users");
    case "location":
      known(query.protocol);
      return results(await thirdParty?.locations?.(query.protocol, query.fields), "locations");
    case "userById":
      if (!query.userId)
        throw new MatrixError(400, "M_MISSING_PARAM", "The userid parameter is required");
      return results(await thirdParty?.usersByUserId?.(query.userId), "users");
    case "locationByAlias":
      if (!query.alias)
        throw new MatrixError(400, "M_MISSING_PARAM", "The alias parameter is required");
      return results(await thirdParty?.locationsByAlias?.(query.alias), "locations");
  }
}
