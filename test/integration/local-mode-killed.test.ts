import { afterEach, describe, expect, inject, it, onTestFinished } from "vitest";
import { claimKey } from "../../functions/appservice/pipeline/process-inbound.ts";
import { freePort } from "../../functions/local/free-port.ts";
import { startSqsLocal } from "../../functions/local/sqs-local.ts";
import { sha256 } from "../../functions/shared/hash.ts";
import { makeEvent, putTransaction, sleep, waitFor } from "../support/appservice.ts";
import {
  registrationWithHomeserver,
  startNpm,
  stopAllNpmStarts,
  VISIBILITY_TIMEOUT_SECONDS,
} from "../support/npm-start.ts";

afterEach(() => stopAllNpmStarts());

describe("npm start killed mid-batch", () => {
  it("SIGKILL while pings stream in and pongs go out → after a restart, one pong per ping, in order per room", async () => {
    // The queues and the table outlive the killed process, as SQS and DynamoDB do in AWS.
    const sqs = await startSqsLocal();
    onTestFinished(sqs.stop);
    const { registrationPath, registration, homeserver } =
      await registrationWithHomeserver("killed");
    const rooms = Array.from({ length: 10 }, (_, i) => `!kill${i}:test.local`);
    for (const room of rooms) homeserver.createRoom(room, ["@bot:test.local"]);
    const port = await freePort();
    const start = () =>
      startNpm(
        {
          PORT: String(port),
          REGISTRATION: registrationPath,
          HOMESERVER_URL: homeserver.url,
          SERVER_NAME: "test.local",
          DYNAMODB_ENDPOINT: inject("dynamodbEndpoint"),
          SQS_ENDPOINT: sqs.endpoint,
          VISIBILITY_TIMEOUT_SECONDS: String(VISIBILITY_TIMEOUT_SECONDS),
        },
        { command: [process.execPath, "--import", "tsx", "functions/local/main.ts"] },
      );

    const transactions = Array.from({ length: 30 }, (_, n) => ({
      txnId: `kill-${n}`,
      events: rooms.map((room) => makeEvent(room, "!ping")),
    }));
    const pings = transactions.flatMap((t) => t.events);
    // The default application answers each ping with one notice, whose txnId derives from
    // the ping's claim: map each pong back to its ping.
    const pingByPongTxnId = new Map(
      pings.map((event) => [
        sha256(`${claimKey({ kind: "event", id: event.event_id, event })}\n0`),
        event.event_id,
      ]),
    );
    const first = await start();
    // As Synapse does: one transaction at a time, each retried until acked. The second half goes
    // on from the kill: its first transactions are refused while the process is down.
    let killed = () => {};
    const kill = new Promise<void>((resolve) => {
      killed = resolve;
    });
    let acked = 0;
    let refused = 0;
    const pushing = (async () => {
      for (const [n, { txnId, events }] of transactions.entries()) {
        if (n === transactions.length / 2) await kill;
        while (
          !(await putTransaction(
            `http://127.0.0.1:${port}`,
            txnId,
            { events },
            {
              token: registration.hs_token,
            },
          ).then(
            (response) => response.ok,
            () => false,
          ))
        ) {
          refused++;
          await sleep(200);
        }
        acked++;
        await sleep(30);
      }
    })();
    // Its start and its first pongs share the machine with the other npm starts' files.
    await waitFor(() => homeserver.sent.length >= 50, 60_000, "the first 50 pongs");
    await first.stop("SIGKILL", 5_000);
    const pongsAtKill = homeserver.sent.length;
    const ackedAtKill = acked;
    killed();
    // Down for a moment, as a crashed process is: the pushes meanwhile are refused.
    await waitFor(() => refused > 0, 10_000, "a transaction refused while down");
    await start();
    await pushing;
    // In-flight messages come back once their visibility timeout has run out.
    await waitFor(() => homeserver.sent.length >= pings.length, 90_000, "every pong");
    // At rest: every message handled and deleted, none in flight that could still be redelivered.
    const queued = async () =>
      (
        await Promise.all(
          ["appservice-inbound.fifo", "appservice-outbound.fifo"].map((name) => sqs.messages(name)),
        )
      ).flat().length;
    await waitFor(async () => (await queued()) === 0, 60_000, "the queues to drain");

    const sends = homeserver.requests.filter(
      (r) => r.method === "PUT" && r.path.includes("/send/"),
    );
    console.log(
      `killed after ${pongsAtKill} of ${pings.length} pongs, ${ackedAtKill} of ${transactions.length} transactions acked; ${refused} pushes refused; ${sends.length} send requests for ${homeserver.sent.length} messages`,
    );
    // Killed mid-batch: pings of the first half still unanswered.
    expect(pongsAtKill).toBeLessThan(pings.length / 2);
    expect(homeserver.sent.map((e) => e.content.body)).toEqual(pings.map(() => "pong"));
    expect(new Set(homeserver.sent.map((e) => pingByPongTxnId.get(e.txnId))).size).toBe(
      pings.length,
    );
    for (const room of rooms) {
      expect(
        homeserver.sent.filter((e) => e.roomId === room).map((e) => pingByPongTxnId.get(e.txnId)),
      ).toEqual(pings.filter((e) => e.room_id === room).map((e) => e.event_id));
    }
  }, 180_000);
});
