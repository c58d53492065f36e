import { describe, expect, it } from "vitest";
import {
  createNamespaceMatcher,
  derivedAliasPrefix,
} from "../../functions/appservice/protocol/namespaces.ts";
import { newRegistration } from "../../functions/appservice/protocol/registration.ts";
import { requestProblem } from "../../functions/matrix/allowed-request.ts";
import { fileNameOf, parseMxc } from "../../functions/matrix/media.ts";
import { downloadMediaRequest, uploadMediaRequest } from "../../functions/matrix/requests.ts";

const bytes = new Uint8Array([1, 2, 3]);

describe("media requests", () => {
  it("bytes go to the media uploads only, and only as bytes with a content type", () => {
    const file = { bytes, type: "image/png" };
    expect(requestProblem(uploadMediaRequest(file))).toBeUndefined();
    expect(
      requestProblem(uploadMediaRequest(file, "a.png", { serverName: "hs", mediaId: "abc" })),
    ).toBeUndefined();
    for (const path of [
      "/_matrix/client/v3/rooms/!r/send/m.room.message/t",
      "/_matrix/media/v3/upload/hs",
      "/_matrix/media/v1/create",
    ]) {
      expect(requestProblem({ method: "PUT", path, content: file })).toBe(
        "bytes go only to a media upload",
      );
    }
    // As the outbound queue would hold them: JSON, no longer bytes.
    const queued = JSON.parse(JSON.stringify(uploadMediaRequest(file)));
    expect(requestProblem(queued)).toBe("the content is not bytes with a content type");
    expect(requestProblem({ ...uploadMediaRequest(file), body: { also: "json" } })).toBe(
      "the request has both a JSON body and bytes",
    );
  });

  it("only media downloads are read as bytes, with a positive cap", () => {
    expect(requestProblem(downloadMediaRequest("hs", "abc", 10, true))).toBeUndefined();
    expect(downloadMediaRequest("hs", "abc", 10, true).path).toBe(
      "/_matrix/client/v1/media/download/hs/abc",
    );
    expect(downloadMediaRequest("hs", "abc", 10, false).path).toBe(
      "/_matrix/media/v3/download/hs/abc",
    );
    expect(
      requestProblem({ method: "GET", path: "/_matrix/client/v3/profile/x", maxResponseBytes: 10 }),
    ).toBe("only a media download is read as bytes");
    expect(
      requestProblem({ ...downloadMediaRequest("hs", "abc", 10, true), maxResponseBytes: 0 }),
    ).toBe("maxResponseBytes is not a positive integer");
  });

  it("mxc URIs and Content-Disposition file names", () => {
    expect(parseMxc("mxc://example.org:8448/AbC_-1")).toEqual({
      serverName: "example.org:8448",
      mediaId: "AbC_-1",
    });
    for (const bad of ["https://x/y", "mxc://x/../y", "mxc://x/y/z", "mxc://x/"]) {
      expect(() => parseMxc(bad)).toThrow(/Not an mxc:\/\/ URI/);
    }
    expect(fileNameOf("inline; filename*=utf-8''a%20b%C3%A9.png")).toBe("a bé.png");
    expect(fileNameOf('attachment; filename="q\\"uote.txt"')).toBe('q"uote.txt');
    expect(fileNameOf("inline; filename=plain.txt")).toBe("plain.txt");
    expect(fileNameOf("inline")).toBeUndefined();
    expect(fileNameOf(undefined)).toBeUndefined();
  });
});

describe("aliases for rooms created under a key", () => {
  it("the application's alias prefixes are claimed; keys' aliases go under the first prefix", () => {
    const registration = newRegistration({
      id: "bridge",
      url: null,
      senderLocalpart: "bot",
      serverName: "example.org",
      prefix: "_as_",
      aliasPrefixes: ["_relay_"],
    });
    expect(registration.namespaces.aliases).toEqual([
      { regex: "#_as_.*:example\\.org", exclusive: true },
      { regex: "#_relay_.*:example\\.org", exclusive: true },
    ]);
    const matcher = createNamespaceMatcher(registration.namespaces);
    expect(matcher.matches("aliases", "#_relay_general:example.org")).toBe(true);
    expect(derivedAliasPrefix(registration.namespaces)).toBe("_as_");
    expect(
      derivedAliasPrefix({
        users: [],
        rooms: [],
        aliases: [
          { regex: "#(irc|xmpp)_.*:example\\.org", exclusive: true },
          { regex: "#_b\\.r_.*:example\\.org", exclusive: true },
        ],
      }),
    ).toBe("_b.r_");
    expect(derivedAliasPrefix({ users: [], rooms: [], aliases: [] })).toBeUndefined();
  });
});
