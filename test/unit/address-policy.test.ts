import { describe, expect, it } from "vitest";
import {
  addressPolicy,
  LOOPBACK_RANGES,
  parseAllowedRanges,
  resolveTarget,
  TargetRefused,
} from "../../functions/shared/address-policy.ts";

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
