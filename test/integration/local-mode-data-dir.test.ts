import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { GetQueueAttributesCommand, GetQueueUrlCommand, type SQSClient } from "@aws-sdk/client-sqs";
import { afterEach, describe, expect, it, onTestFinished, vi } from "vitest";
import { localSqs } from "../../functions/local/aws-clients.ts";
import { freePort } from "../../functions/local/free-port.ts";
import { makeEvent, putTransaction, waitFor } from "../support/appservice.ts";
import type { RecordedRequest } from "../support/homeserver.ts";
import {
  registrationWithHomeserver,
  startNpm,
  stopAllNpmStarts,
  VISIBILITY_TIMEOUT_SECONDS,
} from "../support/npm-start.ts";

afterEach(() => stopAllNpmStarts());

describe("npm start with DATA_DIR, stopped and started again", () => {
  it("delivers the work it accepted before the stop, once: an outbound call and an inbound item", async () => {
    const { dir, registrationPath, registration, homeserver } =
      await registrationWithHomeserver("kept");
    for (const room of ["!ping:test.local", "!hooks:test.local"]) {
      homeserver.createRoom(room, ["@bot:test.local", "@alice:test.local"]);
    }
    homeserver.setState("!hooks:test.local", "m.room.power_levels", "", {
      users: { "@alice:test.local": 100 },
    });
    // The homeserver fails: the pong waits in the outbound queue (retried with backoff), and
    // the webhook command, which needs the room's power levels, in the inbound queue.
    const isSend = (r: RecordedRequest) => r.method === "PUT" && r.path.includes("/send/");
    const isStateRead = (r: RecordedRequest) => r.method === "GET" && r.path.includes("/state/");
    homeserver.cue(isSend, { status: 502, body: { errcode: "M_UNKNOWN", error: "down" } }, 1e6);
    homeserver.cue(
      isStateRead,
      { status: 502, body: { errcode: "M_UNKNOWN", error: "down" } },
      1e6,
    );
    const port = await freePort();
    const start = () =>
      startNpm({
        PORT: String(port),
        REGISTRATION: registrationPath,
        HOMESERVER_URL: homeserver.url,
        SERVER_NAME: "test.local",
        DATA_DIR: dir,
        VISIBILITY_TIMEOUT_SECONDS: String(VISIBILITY_TIMEOUT_SECONDS),
      });

    const first = await start();
    const queuesFile = join(dir, "appservice-queues.jsonl");
    expect(first.output()).toContain(`(queued work kept in ${queuesFile} at a clean stop)`);
    const ping = makeEvent("!ping:test.local", "!ping");
    const command = makeEvent("!hooks:test.local", "!webhook new ci");
    const response = await putTransaction(
      `http://127.0.0.1:${port}`,
      "before-stop",
      { events: [ping, command] },
      { token: registration.hs_token },
    );
    expect(response.status).toBe(200);
    await waitFor(
      () =>
        homeserver.requests.filter(isSend).length >= 2 &&
        homeserver.requests.filter(isStateRead).length >= 1,
      30_000,
      "the pong to fail twice and the command once",
    );
    process.kill(first.pid, "SIGTERM");
    await waitFor(first.exited, 10_000, "npm start to stop");
    const kept = readFileSync(queuesFile, "utf8")
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line));
    // The pong, and the command: its batch was still retrying the power levels at the stop.
    expect(
      kept
        .filter((m) => m.queue === "appservice-outbound.fifo")
        .map((m) => JSON.parse(m.body).request.body.body),
    ).toEqual(["pong"]);
    expect(
      kept.filter(
        (m) => m.queue === "appservice-inbound.fifo" && m.body.includes(command.event_id),
      ),
    ).toHaveLength(1);
    expect(homeserver.sent).toEqual([]);

    homeserver.clearCues();
    const second = await start();
    expect(existsSync(queuesFile)).toBe(false);
    const sqs = localSqs(second.sqsEndpoint);
    onTestFinished(() => sqs.destroy());
    // The command waits out what was left of its visibility timeout, as it would in AWS.
    await waitFor(() => homeserver.sent.length >= 2, 60_000, "the pong and the webhook's URL");
    await vi.waitUntil(async () => (await queuedCount(sqs)) === 0, { timeout: 20_000 });
    const bodies = homeserver.sent.map((e) => String(e.content.body));
    expect(bodies).toHaveLength(2);
    expect(bodies).toContain("pong");
    expect(bodies.find((b) => b.startsWith("Webhook ci created"))).toBeDefined();
    // Each sent once: no request repeated a send that had succeeded.
    const succeeded = homeserver.requests.filter((r) => isSend(r) && r.status === 200);
    expect(succeeded).toHaveLength(2);

    await second.stop("SIGINT", 10_000);
    // Nothing was left queued: nothing kept.
    expect(existsSync(queuesFile)).toBe(false);
  }, 180_000);
});

/** Messages in local mode's queues, waiting or received. */
async function queuedCount(sqs: SQSClient) {
  let total = 0;
  for (const name of ["appservice-inbound.fifo", "appservice-outbound.fifo"]) {
    const { QueueUrl } = await sqs.send(new GetQueueUrlCommand({ QueueName: name }));
    const { Attributes } = await sqs.send(
      new GetQueueAttributesCommand({ QueueUrl, AttributeNames: ["All"] }),
    );
    total +=
      Number(Attributes?.ApproximateNumberOfMessages) +
      Number(Attributes?.ApproximateNumberOfMessagesNotVisible);
  }
  return total;
}
