import { describe, expect, it } from "vitest";
import {
  addressPolicy,
  LOOPBACK_RANGES,
  parseAllowedRanges,
  resolveTarget,
  TargetRefused,
} from "../../functions/remote/address-policy.ts";

const strict = addressPolicy();

describe("the address policy", () => {
  it.each([
    ["127.0.0.1", "loopback"],
    ["127.255.0.9", "loopback"],
    ["10.1.2.3", "private"],
    ["172.16.0.1", "private"],
    ["172.31.255.255", "private"],
    ["192.168.1.1", "private"],
    ["100.64.0.1", "carrier-grade NAT"],
    // Alibaba Cloud's metadata endpoint.
    ["100.100.100.200", "carrier-grade NAT"],
    ["169.254.169.254", "link-local"],
    ["0.0.0.0", "'this network'"],
    ["224.0.0.1", "multicast"],
    ["255.255.255.255", "reserved"],
    ["::1", "loopback"],
    ["::", "unspecified"],
    ["fe80::1", "link-local IPv6"],
    ["fd00:ec2::254", "unique-local"],
    ["fc00::5", "unique-local"],
    ["ff02::1", "multicast IPv6"],
    ["::ffff:127.0.0.1", "loopback"],
    ["::ffff:a9fe:a9fe", "link-local"],
    ["64:ff9b::a00:1", "carries 10.0.0.1, a private address"],
    ["2002:7f00:1::", "carries 127.0.0.1, a loopback address"],
    // IPv4-mapped, whatever it carries: ::ffff:0:0/96 is no address a public host has.
    ["::ffff:8.8.8.8", "IPv4-mapped IPv6 address (::ffff:0:0/96)"],
    ["::ffff:808:808", "IPv4-mapped IPv6 address (::ffff:0:0/96)"],
    ["3fff::1", "documentation IPv6"],
    ["3fff:fff:ffff::1", "documentation IPv6"],
    ["5f00::1", "SRv6 segment identifier"],
    ["5f00:ffff::1", "SRv6 segment identifier"],
  ])("refuses %s (%s)", (address, what) => {
    expect(strict.refusal(address)).toContain(what);
  });

  it.each([
    "8.8.8.8",
    "1.1.1.1",
    "172.32.0.1",
    "2606:4700:4700::1111",
    "64:ff9b::808:808",
    "2002:808:808::",
    // Just outside 3fff::/20 and 5f00::/16.
    "3fff:1000::1",
    "5f01::1",
  ])("allows the public address %s", (address) => {
    expect(strict.refusal(address)).toBeUndefined();
  });

  it("allows what the operator allows, and only that", () => {
    const loopback = addressPolicy(LOOPBACK_RANGES);
    expect(loopback.refusal("127.0.0.1")).toBeUndefined();
    expect(loopback.refusal("::1")).toBeUndefined();
    expect(loopback.refusal("::ffff:127.0.0.1")).toBeUndefined();
    expect(loopback.refusal("10.0.0.1")).toContain("private");
    expect(loopback.refusal("169.254.169.254")).toContain("link-local");
    const lan = addressPolicy(parseAllowedRanges(" 10.0.0.0/8, 192.168.1.7 ,"));
    expect(lan.allowed).toEqual(["10.0.0.0/8", "192.168.1.7"]);
    expect(lan.refusal("10.9.9.9")).toBeUndefined();
    expect(lan.refusal("192.168.1.7")).toBeUndefined();
    expect(lan.refusal("192.168.1.8")).toContain("private");
  });

  it("allows IPv4-mapped addresses only where the operator allows them, and no IPv4 address with them", () => {
    const mapped = addressPolicy(["::ffff:0:0/96"]);
    expect(mapped.refusal("::ffff:8.8.8.8")).toBeUndefined();
    // Allowing the mapped range allows no IPv4 range (BlockList alone would match them all).
    expect(mapped.refusal("10.0.0.1")).toContain("private");
    expect(mapped.refusal("127.0.0.1")).toContain("loopback");
    // An allowed IPv4 range allows its mapped form too (the same host); nothing more.
    const lan = addressPolicy(["10.0.0.0/8"]);
    expect(lan.refusal("::ffff:10.1.2.3")).toBeUndefined();
    expect(lan.refusal("::ffff:8.8.8.8")).toContain("IPv4-mapped");
  });

  it("names a bad setting", () => {
    expect(() => addressPolicy(["10.0.0.0/33"])).toThrow(
      '"10.0.0.0/33" is not an IP address or a CIDR range',
    );
    expect(() => addressPolicy(["localhost"])).toThrow('"localhost" is not an IP address');
  });

  it("refuses what is not an IP address", () => {
    expect(strict.refusal("example.org")).toContain("not an IP address");
  });
});

describe("resolveTarget", () => {
  it("checks literals without resolving, IPv6 in brackets too", async () => {
    const lookup = () => Promise.reject(new Error("no lookup expected"));
    await expect(resolveTarget("8.8.8.8", strict, lookup)).resolves.toEqual({
      address: "8.8.8.8",
      family: 4,
    });
    await expect(resolveTarget("[::1]", strict, lookup)).rejects.toThrow(TargetRefused);
    await expect(resolveTarget("[::1]", strict, lookup)).rejects.toThrow(
      "::1 is a loopback IPv6 address",
    );
  });

  it("refuses a name when any of its addresses is refused", async () => {
    const lookup = async () => [
      { address: "93.184.215.14", family: 4 as const },
      { address: "10.0.0.7", family: 4 as const },
    ];
    await expect(resolveTarget("mixed.example", strict, lookup)).rejects.toThrow(
      "mixed.example resolves to a refused address: 10.0.0.7 is a private address",
    );
  });

  it("returns the first address of a name whose addresses are all allowed", async () => {
    const lookup = async () => [
      { address: "93.184.215.14", family: 4 as const },
      { address: "2606:2800:21f:cb07:6820:80da:af6b:8b2c", family: 6 as const },
    ];
    await expect(resolveTarget("example.com", strict, lookup)).resolves.toEqual({
      address: "93.184.215.14",
      family: 4,
    });
  });

  it("a name that does not exist is refused for good; another DNS failure is thrown as it is", async () => {
    const failing = (code: string) => () =>
      Promise.reject(Object.assign(new Error(`getaddrinfo ${code}`), { code }));
    await expect(resolveTarget("nowhere.invalid", strict, failing("ENOTFOUND"))).rejects.toThrow(
      TargetRefused,
    );
    const transient = resolveTarget("flaky.example", strict, failing("EAI_AGAIN"));
    await expect(transient).rejects.toThrow("getaddrinfo EAI_AGAIN");
    await expect(transient).rejects.not.toBeInstanceOf(TargetRefused);
  });

  it("with the system's resolver: localhost is refused unless loopback is allowed", async () => {
    await expect(resolveTarget("localhost", strict)).rejects.toThrow(
      /localhost resolves to a refused address: .* loopback/,
    );
    const allowed = await resolveTarget("localhost", addressPolicy(LOOPBACK_RANGES));
    expect(["127.0.0.1", "::1"]).toContain(allowed.address);
  });
});
