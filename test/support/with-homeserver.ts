import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { onTestFinished } from "vitest";
import { application as defaultApplication } from "../../functions/applications/webhooks/index.ts";
import { createNamespaceMatcher } from "../../functions/appservice/protocol/namespaces.ts";
import {
  type NewRegistrationOptions,
  newRegistration,
  registrationYaml,
} from "../../functions/appservice/protocol/registration.ts";
import type { ClientEvent } from "../../functions/appservice/protocol/transaction.ts";
import type { LocalOptions } from "../../functions/local/local.ts";
import { makeEvent, putTransaction, startTestAppservice, tempDir, waitFor } from "./appservice.ts";
import { ScriptedHomeserver } from "./homeserver.ts";

export const SERVER = "test.local";

/**
 * The appservice in local mode, talking to a scripted homeserver that knows its tokens. Both
 * stop when the test finishes.
 */
export async function startWithHomeserver(options: Partial<LocalOptions> = {}) {
  const started = await startAppserviceAndHomeserver(options);
  onTestFinished(started.stop);
  return started;
}

/** A room of alice's, made on the homeserver, that the bot is invited to and has joined. */
export async function roomWithBot(
  { homeserver, send, bot }: Awaited<ReturnType<typeof startWithHomeserver>>,
  room: string,
) {
  homeserver.createRoom(room, [`@alice:${SERVER}`]);
  const invite = makeEvent(room, "", {
    type: "m.room.member",
    state_key: bot,
    content: { membership: "invite" },
  });
  const answer = await send(`invite ${room}`, [invite]);
  if (answer.status !== 200) throw new Error(`the invite got ${answer.status}`);
  await waitFor(() => homeserver.rooms.get(room)?.has(bot) === true);
}

/** A registration file, and a scripted homeserver started that knows it (its namespaces too). */
export async function homeserverWithRegistration(
  options: Partial<Pick<NewRegistrationOptions, "id" | "userPrefixes" | "aliasPrefixes">> = {},
) {
  const registrationPath = join(await tempDir(), "registration.yaml");
  const registration = newRegistration({
    id: options.id ?? "scripted-test",
    url: null,
    senderLocalpart: "bot",
    serverName: SERVER,
    prefix: "_as_",
    ...(options.userPrefixes && { userPrefixes: options.userPrefixes }),
    ...(options.aliasPrefixes && { aliasPrefixes: options.aliasPrefixes }),
  });
  await writeFile(registrationPath, registrationYaml(registration));
  const namespaces = createNamespaceMatcher(registration.namespaces);
  const homeserver = new ScriptedHomeserver(
    registration.as_token,
    SERVER,
    `@bot:${SERVER}`,
    (userId) => namespaces.matches("users", userId),
  );
  homeserver.aliasInNamespace = (alias) => namespaces.matches("aliases", alias);
  await homeserver.start();
  return { registration, registrationPath, homeserver };
}

/** The same, for a whole file's tests: the caller stops it. */
export async function startAppserviceAndHomeserver(options: Partial<LocalOptions> = {}) {
  const application = options.application ?? defaultApplication;
  const { registration, registrationPath, homeserver } = await homeserverWithRegistration({
    ...(application.userPrefixes && { userPrefixes: application.userPrefixes }),
    ...(application.aliasPrefixes && { aliasPrefixes: application.aliasPrefixes }),
  });
  const local = await startTestAppservice({
    registrationPath,
    homeserverUrl: homeserver.url,
    serverName: SERVER,
    backoff: { baseSeconds: 1, capSeconds: 2 },
    ...options,
  }).catch(async (error) => {
    await homeserver.stop();
    throw error;
  });
  homeserver.appservice = { id: registration.id, url: local.url, hsToken: registration.hs_token };
  const send = (txnId: string, events: ClientEvent[]) =>
    putTransaction(local.url, txnId, { events }, { token: registration.hs_token });
  /** A GET as the homeserver makes it (`token` "" for none). */
  const get = (path: string, token: string = registration.hs_token) =>
    fetch(`${local.url}${path}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  const stop = async () => {
    await local.stop();
    await homeserver.stop();
  };
  return { local, homeserver, registration, send, get, stop, bot: `@bot:${SERVER}` };
}
