import { existsSync } from "node:fs";
import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { afterAll, describe, expect, it } from "vitest";
import { makeEvent, putTransaction, tempDir, waitFor } from "../support/appservice.ts";
import { startNpmFor, stopAllNpmStarts } from "../support/npm-start.ts";
import { waitForAsync } from "../support/wait.ts";
import { homeserverWithRegistration, startWithHomeserver } from "../support/with-homeserver.ts";

/** Debian's chromium (`.ci/run` installs it): playwright-core drives it, downloading nothing. */
const CHROMIUM = "/usr/bin/chromium";
/** `UPDATE_SCREENSHOT=1` writes the README's picture of the console. */
const SCREENSHOT = join(import.meta.dirname, "../../docs/operator-console.png");

afterAll(() => stopAllNpmStarts("SIGTERM"));

/** Chromium, headless, on a profile of its own (removed by the caller). */
async function launchChromium(context: { locale?: string; timezoneId?: string } = {}) {
  const profile = await mkdtemp(join(tmpdir(), "chromium-profile-"));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    viewport: { width: 1000, height: 900 },
    ...context,
  });
  return { profile, browser };
}

describe("the operator console in a real browser", () => {
  it("shows a dead-lettered outbound call with its reason; replayed once the homeserver is fixed, the message arrives once", {
    timeout: 180_000,
  }, async () => {
    const dir = await tempDir();
    const started = await homeserverWithRegistration({
      id: "console-test",
      userPrefixes: ["_webhook_"],
    });
    const { registration, homeserver } = started;
    const room = "!console:test.local";
    homeserver.createRoom(room, ["@bot:test.local", "@alice:test.local"]);

    // `npm start` as the README runs it, ADMIN_TOKEN unset: it makes one and prints it.
    const npm = await startNpmFor(started, { ADMIN_TOKEN: "" });
    const { url } = npm;
    const token = npm.adminToken;
    expect(token).toMatch(/^[A-Za-z0-9_-]{64}$/);
    // The registration's tokens are never printed.
    expect(npm.output()).not.toContain(registration.as_token);
    expect(npm.output()).not.toContain(registration.hs_token);
    const api = async (path: string) =>
      (await (
        await fetch(`${url}/admin/api/${path}`, { headers: { authorization: `Bearer ${token}` } })
      ).json()) as {
        deadLetters: { outbound: number };
        queues: { outbound: { waiting: number; inFlight: number; delayed: number } };
      };

    // The homeserver refuses the bot's answer for good: dead-lettered.
    homeserver.cue((r) => r.method === "PUT" && r.path.includes("/send/"), {
      status: 400,
      body: { errcode: "M_BAD_JSON", error: "The homeserver refused this event" },
    });
    const ping = await putTransaction(
      url,
      "1",
      { events: [makeEvent(room, "!ping")] },
      { token: registration.hs_token },
    );
    expect(ping.status).toBe(200);
    await waitForAsync(
      async () => (await api("status")).deadLetters.outbound === 1,
      30_000,
      "the dead letter",
    );

    const { profile, browser } = await launchChromium();
    try {
      const page = await browser.newPage();
      const problems: string[] = [];
      page.on("console", (message) => {
        if (message.type() === "error") problems.push(message.text());
      });
      page.on("pageerror", (error) => problems.push(error.message));
      const requests: string[] = [];
      page.on("request", (request) => requests.push(request.url()));

      // The token in the fragment, which never reaches the server.
      await page.goto(`${url}/admin#token=${token}`);
      const outbound = page.locator("#outbound-dead");
      await outbound.getByText("400 M_BAD_JSON The homeserver refused this event").waitFor();
      await expect(outbound.locator("td", { hasText: room }).count()).resolves.toBe(1);
      await expect(outbound.locator("td", { hasText: /^send$/ }).count()).resolves.toBe(1);
      // The fragment is gone from the address bar; no request carried the token in its URL.
      expect(page.url()).toBe(`${url}/admin`);
      expect(requests.filter((r) => r.includes(token as string))).toEqual([]);
      await page.locator("#health").getByText("reachable, ping").waitFor();
      // The application's section (npm start's default, the webhooks), as its manifest declares it.
      await page.locator("#sections h2", { hasText: "Webhooks" }).waitFor();
      await expect(page.locator("#section-webhooks").textContent()).resolves.toBe("None.");
      if (process.env.UPDATE_SCREENSHOT) {
        await page.screenshot({ path: join(dir, "console.png"), fullPage: true });
        await copyFile(join(dir, "console.png"), SCREENSHOT);
      }

      // The homeserver is fixed (its one refusal used up): replay from the page.
      expect(homeserver.sent).toEqual([]);
      await outbound.getByRole("button", { name: "Replay", exact: true }).click();
      await page.getByText("Replayed 1").waitFor();
      await waitFor(() => homeserver.sent.length >= 1, 30_000);
      // At rest: nothing queued, in flight or dead; so nothing more can arrive.
      await waitForAsync(
        async () => {
          const status = await api("status");
          const { waiting, inFlight, delayed } = status.queues.outbound;
          return status.deadLetters.outbound === 0 && waiting + inFlight + delayed === 0;
        },
        30_000,
        "the queues at rest",
      );
      expect(homeserver.sent.map((event) => [event.roomId, event.content.body])).toEqual([
        [room, "pong"],
      ]);
      // Recent traffic: npm start runs the consumers in worker threads; their log lines reach
      // the console's thread through the supervisor.
      await waitForAsync(
        async () => {
          const { outbound } = (await api("traffic")) as unknown as {
            outbound: { roomId?: string; outcome: string }[];
          };
          const outcomes = outbound.filter((o) => o.roomId === room).map((o) => o.outcome);
          return outcomes.includes("dead") && outcomes.includes("done");
        },
        30_000,
        "the outbox's lines in the console's traffic",
      );
      await page.getByRole("button", { name: "Refresh" }).click();
      await page.locator("#outbound-dead").getByText("None.").waitFor();
      const sends = page.locator("#outbound tr", { hasText: room });
      await sends.filter({ hasText: "dead: " }).first().waitFor();
      await sends.filter({ hasText: /done$/ }).first().waitFor();
      await page
        .locator("#transactions tr")
        .filter({ has: page.locator("td", { hasText: /^1$/ }) })
        .first()
        .waitFor();
      // "… s ago", its time in its title.
      await expect(
        page.locator("#transactions tr time").first().getAttribute("title"),
      ).resolves.toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/);
      // The page ran under its Content-Security-Policy without a violation.
      expect(problems).toEqual([]);
    } finally {
      await browser.close();
      await rm(profile, { recursive: true, force: true });
      await homeserver.stop();
    }
  });
});

// One appservice and browser for both cases: each costs seconds of a 2-core machine.
describe("the console's homeserver card, and an application section's times", () => {
  it("a homeserver without the v1.7 ping, reachable: green, its detail saying what is unknown; a failed ping: red; a time column in the reader's local time, the ISO in its title", {
    timeout: 120_000,
  }, async () => {
    const at = "2026-03-04T05:06:07.000Z";
    const { local, homeserver } = await startWithHomeserver({
      application: {
        consoleSections: [
          {
            id: "clock",
            title: "Clock",
            columns: [
              { key: "name", label: "name" },
              { key: "at", label: "at", time: true },
              { key: "note", label: "note" },
            ],
            rows: async () => [{ name: "first", at, note: at }],
          },
        ],
      },
    });
    homeserver.pingSupported = false;
    // A reader in Tokyo (UTC+9, no summer time) who writes dates the British way.
    const { profile, browser } = await launchChromium({
      locale: "en-GB",
      timezoneId: "Asia/Tokyo",
    });
    try {
      const page = await browser.newPage();
      await page.goto(`${local.url}/admin#token=${local.adminToken}`);
      const time = page.locator("#section-clock td time");
      await time.waitFor();
      await expect(time.textContent()).resolves.toBe("04/03/2026, 14:06:07");
      await expect(time.getAttribute("title")).resolves.toBe(at);
      await expect(time.getAttribute("datetime")).resolves.toBe(at);
      // Its cell wraps as a text cell does.
      await expect(page.locator("#section-clock td.wrap time").count()).resolves.toBe(1);
      // A column not declared a time stays the text it is.
      await expect(page.locator("#section-clock td", { hasText: at }).count()).resolves.toBe(1);

      const card = page.locator("#health .card", { hasText: "Homeserver" }).locator("span");
      await page.getByText("no appservice ping (before Matrix v1.7)").waitFor();
      await expect(card.textContent()).resolves.toBe("reachable");
      await expect(card.getAttribute("class")).resolves.toBe("ok");
      // Reachable, but its ping of the appservice fails: the homeserver cannot push.
      homeserver.pingSupported = true;
      homeserver.cue(
        (r) => r.path.endsWith("/ping"),
        { status: 502, body: { errcode: "M_CONNECTION_FAILED", error: "refused" } },
        // However often the page asks.
        1000,
      );
      await page.getByRole("button", { name: "Refresh" }).click();
      await page.getByText("ping failed: 502 M_CONNECTION_FAILED refused").waitFor();
      await expect(card.getAttribute("class")).resolves.toBe("bad");
    } finally {
      await browser.close();
      await rm(profile, { recursive: true, force: true });
    }
  });
});

if (!existsSync(CHROMIUM)) {
  throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)`);
}
