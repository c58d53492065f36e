import { lookup as dnsLookup } from "node:dns/promises";
import { BlockList, isIP } from "node:net";

/**
 * Which network addresses a request made on a user's or an application's behalf may reach.
 * Everything the public internet cannot route to is refused (loopback, private, link-local,
 * CGNAT, unique-local IPv6, cloud metadata endpoints, …) unless the operator allows it, so that
 * a URL someone typed cannot reach the appservice's own network. Checked on the addresses a
 * name resolves to, and the connection then goes to the address checked (see `resolveTarget`),
 * so that a name resolving differently the second time (DNS rebinding) cannot get around it.
 */

/** Ranges refused by default, each with what it is (for the refusal's reason). */
const REFUSED_RANGES: readonly (readonly [string, string])[] = [
  ["0.0.0.0/8", "a 'this network' address"],
  ["10.0.0.0/8", "a private address"],
  ["100.64.0.0/10", "a carrier-grade NAT address"],
  ["127.0.0.0/8", "a loopback address"],
  // 169.254.169.254 is the metadata endpoint of AWS, GCP, Azure and others.
  ["169.254.0.0/16", "a link-local address (cloud metadata endpoints live here)"],
  ["172.16.0.0/12", "a private address"],
  ["192.0.0.0/24", "an IETF protocol assignment"],
  ["192.0.2.0/24", "a documentation address"],
  ["192.88.99.0/24", "a 6to4 relay anycast address"],
  ["192.168.0.0/16", "a private address"],
  ["198.18.0.0/15", "a benchmarking address"],
  ["198.51.100.0/24", "a documentation address"],
  ["203.0.113.0/24", "a documentation address"],
  ["224.0.0.0/4", "a multicast address"],
  ["240.0.0.0/4", "a reserved address"],
  // IPv4-mapped addresses (::ffff:a.b.c.d) are matched against the IPv4 ranges by BlockList, and
  // refused in any case (MAPPED_RANGE).
  ["::1/128", "a loopback IPv6 address"],
  ["::/128", "the unspecified IPv6 address"],
  ["::/96", "an IPv4-compatible IPv6 address (deprecated)"],
  ["64:ff9b:1::/48", "a local-use NAT64 address"],
  ["100::/64", "a discard-only IPv6 address"],
  ["2001::/32", "a Teredo address"],
  ["2001:db8::/32", "a documentation IPv6 address"],
  ["3fff::/20", "a documentation IPv6 address"],
  ["5f00::/16", "an SRv6 segment identifier"],
  ["fc00::/7", "a unique-local IPv6 address (AWS's metadata endpoint fd00:ec2::254 is one)"],
  ["fe80::/10", "a link-local IPv6 address"],
  ["fec0::/10", "a site-local IPv6 address"],
  ["ff00::/8", "a multicast IPv6 address"],
];

/**
 * `::ffff:0:0/96`, IPv4-mapped: never a host's public address on the wire, whatever IPv4 address it
 * carries. Not in REFUSED_RANGES: BlockList matches an IPv6 rule of this range against every IPv4
 * address too, so it is tested on the groups of an address written as IPv6.
 */
const MAPPED_RANGE = "::ffff:0:0/96";
const isMapped = (address: string) => {
  const groups = expandIpv6(address);
  return groups?.slice(0, 5).every((g) => g === 0) === true && groups[5] === 0xffff;
};

/** IPv6 ranges that carry an IPv4 address, which is checked as well: NAT64 and 6to4. */
const embeddedIpv4 = (address: string): string | undefined => {
  const groups = expandIpv6(address);
  if (!groups) return undefined;
  const ipv4 = (high: number, low: number) =>
    [high >> 8, high & 0xff, low >> 8, low & 0xff].join(".");
  if (groups[0] === 0x64 && groups[1] === 0xff9b && groups.slice(2, 6).every((g) => g === 0)) {
    return ipv4(groups[6] as number, groups[7] as number);
  }
  if (groups[0] === 0x2002) return ipv4(groups[1] as number, groups[2] as number);
  return undefined;
};

/** The eight 16-bit groups of an IPv6 address (a trailing dotted IPv4 part included). */
function expandIpv6(address: string): number[] | undefined {
  if (isIP(address) !== 6) return undefined;
  let text = address;
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted?.[1]) {
    const [a, b, c, d] = dotted[1].split(".").map(Number) as [number, number, number, number];
    text = `${text.slice(0, -dotted[1].length)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = "", tail] = text.split("::");
  const part = (s: string) => (s ? s.split(":").map((g) => Number.parseInt(g, 16)) : []);
  const start = part(head);
  const end = tail === undefined ? [] : part(tail);
  return [...start, ...Array(8 - start.length - end.length).fill(0), ...end];
}

const familyOf = (address: string) => (isIP(address) === 6 ? "ipv6" : "ipv4");

/** `a.b.c.d/n` or `x::/n` into a BlockList rule; throws a RangeError naming the bad entry. */
function addCidr(list: BlockList, cidr: string) {
  const [network = "", prefixText, extra] = cidr.trim().split("/");
  const family = isIP(network);
  const prefix = prefixText === undefined ? (family === 6 ? 128 : 32) : Number(prefixText);
  if (
    family === 0 ||
    extra !== undefined ||
    !Number.isInteger(prefix) ||
    prefix < 0 ||
    prefix > (family === 6 ? 128 : 32)
  ) {
    throw new RangeError(`${JSON.stringify(cidr)} is not an IP address or a CIDR range`);
  }
  list.addSubnet(network, prefix, family === 6 ? "ipv6" : "ipv4");
}

/** The operator's setting: CIDR ranges (or single addresses) separated by commas; may be empty. */
export const parseAllowedRanges = (setting: string | undefined): string[] =>
  (setting ?? "")
    .split(",")
    .map((entry) => entry.trim())
    .filter((entry) => entry !== "");

/** Loopback only: what local mode allows by default, its services being on 127.0.0.1. */
export const LOOPBACK_RANGES = ["127.0.0.0/8", "::1/128"] as const;

export interface AddressPolicy {
  /** What the operator allows beyond the public internet, as given. */
  readonly allowed: readonly string[];
  /** Why `address` (an IP address) must not be connected to; undefined when it may. */
  refusal(address: string): string | undefined;
}

/** The policy that refuses the ranges above except those in `allowed` (CIDRs). */
export function addressPolicy(allowed: readonly string[] = []): AddressPolicy {
  // Apart by family: BlockList would match an allowed `::ffff:0:0/96` against every IPv4 address.
  const allowV4 = new BlockList();
  const allowV6 = new BlockList();
  for (const cidr of allowed) {
    addCidr(isIP(cidr.trim().split("/")[0] ?? "") === 6 ? allowV6 : allowV4, cidr);
  }
  const allowList = {
    // An IPv4 rule matches the IPv4-mapped form of its addresses too (the same host).
    check: (address: string, family: "ipv4" | "ipv6") =>
      allowV4.check(address, family) || (family === "ipv6" && allowV6.check(address, "ipv6")),
  };
  const refused = REFUSED_RANGES.map(([cidr, what]) => {
    const list = new BlockList();
    addCidr(list, cidr);
    return { list, what };
  });
  const rangeOf = (address: string) =>
    refused.find(({ list }) => list.check(address, familyOf(address)))?.what;
  return {
    allowed: [...allowed],
    refusal(address) {
      if (isIP(address) === 0) return `${JSON.stringify(address)} is not an IP address`;
      if (allowList.check(address, familyOf(address))) return undefined;
      const what = rangeOf(address);
      if (what) return `${address} is ${what}`;
      if (isMapped(address)) return `${address} is an IPv4-mapped IPv6 address (${MAPPED_RANGE})`;
      const inner = embeddedIpv4(address);
      const innerWhat = inner && !allowList.check(inner, "ipv4") && rangeOf(inner);
      return innerWhat ? `${address} carries ${inner}, ${innerWhat}` : undefined;
    },
  };
}

/** A target the policy refuses: nothing was sent, and retrying cannot help. */
export class TargetRefused extends Error {
  override name = "TargetRefused";
}

/** An address to connect to, as `node:dns` gives it. */
export interface ResolvedAddress {
  address: string;
  family: 4 | 6;
}

export type Lookup = (hostname: string) => Promise<ResolvedAddress[]>;

const systemLookup: Lookup = async (hostname) =>
  (await dnsLookup(hostname, { all: true, verbatim: true })) as ResolvedAddress[];

/**
 * The address to connect to for `hostname` (a URL's, IPv6 in brackets or not): the hostname
 * itself when it is an IP address, else the first address it resolves to. Throws
 * `TargetRefused` when any of its addresses is one the policy refuses (a name that resolves to
 * both a public and a private address is refused: which one a connection gets is not ours to
 * choose), or when it resolves to none. The caller must connect to the address returned, not
 * resolve the name again.
 */
export async function resolveTarget(
  hostname: string,
  policy: AddressPolicy,
  lookup: Lookup = systemLookup,
): Promise<ResolvedAddress> {
  const bare = hostname.replace(/^\[(.*)\]$/, "$1");
  const literal = isIP(bare);
  let addresses: ResolvedAddress[];
  if (literal !== 0) {
    addresses = [{ address: bare, family: literal as 4 | 6 }];
  } else {
    try {
      addresses = await lookup(bare);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      // A name that does not exist will not start to: a final refusal. Other DNS failures are
      // transient and thrown as they are.
      if (code === "ENOTFOUND" || code === "ENODATA") {
        throw new TargetRefused(`${bare} does not resolve (${code})`);
      }
      throw error;
    }
  }
  for (const { address } of addresses) {
    const refusal = policy.refusal(address);
    if (refusal) {
      throw new TargetRefused(
        literal !== 0 ? refusal : `${bare} resolves to a refused address: ${refusal}`,
      );
    }
  }
  const [first] = addresses;
  if (!first) throw new TargetRefused(`${bare} resolves to no address`);
  return first;
}
