import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { endianness } from "node:os";

export interface ListeningSocket {
  pid: number;
  /** As `ss` shows it: `127.0.0.1`, `::`, `::ffff:127.0.0.1`, … */
  address: string;
  port: number;
}

/**
 * An address from /proc/net/tcp or tcp6: 32-bit words in hex, each in the kernel's byte order.
 * IPv6 comes out uncompressed but for a run of zeros at the start (`::`, `::1`, `::ffff:…`).
 */
export function procAddress(hex: string): string {
  const bytes = (hex.match(/../g) ?? []).map((pair) => Number.parseInt(pair, 16));
  const words = Array.from({ length: bytes.length / 4 }, (_, i) => bytes.slice(i * 4, i * 4 + 4));
  const ordered = words.flatMap((word) => (endianness() === "LE" ? word.reverse() : word));
  if (ordered.length === 4) return ordered.join(".");
  const mapped = ordered.slice(0, 12).join() === "0,0,0,0,0,0,0,0,0,0,255,255";
  if (mapped) return `::ffff:${ordered.slice(12).join(".")}`;
  const groups = Array.from({ length: 8 }, (_, i) =>
    (((ordered[i * 2] as number) << 8) | (ordered[i * 2 + 1] as number)).toString(16),
  );
  const leadingZeros = groups.findIndex((group) => group !== "0");
  if (leadingZeros === -1) return "::";
  return leadingZeros >= 2 ? `::${groups.slice(leadingZeros).join(":")}` : groups.join(":");
}

/** Reachable from this machine only: 127.0.0.0/8, `::1`, or 127.x mapped into IPv6. */
export const isLoopback = (address: string) =>
  /^(::ffff:)?127\./.test(address) || address === "::1";

/** The listening sockets in a /proc/net/tcp or tcp6 table, by inode. */
export function parseListeners(table: string): Map<string, { address: string; port: number }> {
  const listeners = new Map<string, { address: string; port: number }>();
  for (const line of table.split("\n").slice(1)) {
    const fields = line.trim().split(/\s+/);
    const [local, state, inode] = [fields[1], fields[3], fields[9]];
    // 0A is TCP_LISTEN.
    if (!local || state !== "0A" || !inode) continue;
    const [address, port] = local.split(":") as [string, string];
    listeners.set(inode, { address: procAddress(address), port: Number.parseInt(port, 16) });
  }
  return listeners;
}

/** `pid` and every process below it, found by their parent in /proc/<pid>/stat. */
export function processTree(pid: number): number[] {
  const parents = new Map<number, number[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      // The command name, in parentheses, may itself hold spaces and parentheses.
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      parents.set(ppid, [...(parents.get(ppid) ?? []), Number(entry)]);
    } catch {
      // The process ended while we looked.
    }
  }
  const tree = [pid];
  for (let i = 0; i < tree.length; i++) tree.push(...(parents.get(tree[i] as number) ?? []));
  return tree;
}

/**
 * The TCP sockets `pids` listen on, from /proc alone (nothing to install): each process's
 * socket inodes in /proc/<pid>/fd, matched against the listeners in /proc/net/tcp and tcp6.
 */
export function listeningSockets(pids: readonly number[]): ListeningSocket[] {
  const listeners = new Map([
    ...parseListeners(readFileSync("/proc/net/tcp", "utf8")),
    ...parseListeners(readFileSync("/proc/net/tcp6", "utf8")),
  ]);
  const sockets: ListeningSocket[] = [];
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      let target: string;
      try {
        target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
      const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
      const listener = inode && listeners.get(inode);
      if (listener) sockets.push({ pid, ...listener });
    }
  }
  return sockets;
}
