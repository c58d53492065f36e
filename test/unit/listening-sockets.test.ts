import { createServer, type Server } from "node:net";
import { endianness } from "node:os";
import { describe, expect, it, onTestFinished } from "vitest";
import {
  isLoopback,
  listeningSockets,
  parseListeners,
  processTree,
} from "../support/listening-sockets.ts";

const listen = (host: string) =>
  new Promise<Server>((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, host, () => resolve(server));
  });

// The check local-mode.test.ts runs on `npm start`'s processes: it must see what they listen on
// and tell loopback from every other address.
describe("listeningSockets", () => {
  it.runIf(endianness() === "LE")("reads the listeners of /proc/net/tcp and tcp6", () => {
    const tcp = [
      "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
      "   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 101 1 0 100 0 0 10 0",
      "   1: 00000000:1F41 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 102 1 0 100 0 0 10 0",
      "   2: 0100007F:E4B6 0100007F:1F40 01 00000000:00000000 00:00000000 00000000     0        0 103 1 0 100 0 0 10 0",
    ].join("\n");
    const tcp6 = [
      "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
      "   0: 00000000000000000000000000000000:46CC 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 201 1 0 100 0 0 10 0",
      "   1: 0000000000000000FFFF00000100007F:46CB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 202 1 0 100 0 0 10 0",
      "   2: 00000000000000000000000001000000:46CD 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 203 1 0 100 0 0 10 0",
      "   3: 0000000000000000FFFF00000A00000A:46CE 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 204 1 0 100 0 0 10 0",
    ].join("\n");
    const listeners = [...parseListeners(tcp), ...parseListeners(tcp6)].map(
      ([inode, { address, port }]) => [inode, address, port, isLoopback(address)],
    );
    expect(listeners).toEqual([
      ["101", "127.0.0.1", 8000, true],
      ["102", "0.0.0.0", 8001, false],
      // 103 is a connection, not a listener.
      ["201", "::", 18124, false],
      ["202", "::ffff:127.0.0.1", 18123, true],
      ["203", "::1", 18125, true],
      ["204", "::ffff:10.0.0.10", 18126, false],
    ]);
  });

  it("finds this process's own listeners, and tells 0.0.0.0 from 127.0.0.1", async () => {
    const [everywhere, loopback] = await Promise.all([listen("0.0.0.0"), listen("127.0.0.1")]);
    onTestFinished(() => {
      everywhere.close();
      loopback.close();
    });
    const port = (server: Server) => (server.address() as { port: number }).port;
    const sockets = listeningSockets(processTree(process.pid));
    expect(sockets).toContainEqual({
      pid: process.pid,
      address: "0.0.0.0",
      port: port(everywhere),
    });
    expect(sockets).toContainEqual({
      pid: process.pid,
      address: "127.0.0.1",
      port: port(loopback),
    });
    expect(sockets.filter((socket) => !isLoopback(socket.address))).toContainEqual({
      pid: process.pid,
      address: "0.0.0.0",
      port: port(everywhere),
    });
  });

  it("lists a process and the processes below it", () => {
    expect(processTree(process.ppid)).toContain(process.pid);
    expect(processTree(process.pid)[0]).toBe(process.pid);
  });
});
