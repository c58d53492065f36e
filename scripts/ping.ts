// `npm run ping`: has the homeserver ping the appservice, and says what is wrong if it cannot.
// REGISTRATION (default ./registration.yaml) and HOMESERVER_URL (default http://127.0.0.1:8008).
import { resolve } from "node:path";
import { loadRegistration } from "../functions/appservice/registration.ts";
import { pingHomeserver } from "./ping-homeserver.ts";

const registration = await loadRegistration(
  resolve(process.env.REGISTRATION ?? "./registration.yaml"),
);
const result = await pingHomeserver(
  process.env.HOMESERVER_URL ?? "http://127.0.0.1:8008",
  registration,
);
(result.ok ? console.log : console.error)(result.message);
process.exitCode = result.ok ? 0 : 1;
