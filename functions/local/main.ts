// `npm start`: the appservice on this machine, no AWS account needed.
import { mkdir } from "node:fs/promises";
import { resolve } from "node:path";
import { remoteSecretVariable } from "../appservice/manifest.ts";
import { RegistrationError } from "../appservice/protocol/registration.ts";
import { parseAllowedRanges } from "../remote/address-policy.ts";
import { DEFAULT_BACKOFF } from "../shared/backoff.ts";
import { applicationModuleOf, DEFAULT_APPLICATION, loadApplication } from "./applications.ts";
import { encryptedRoomsSetting } from "./encrypted-rooms-setting.ts";
import { startLocalWorkers } from "./local-workers.ts";
import {
  cryptoStoreSecretFile,
  localRemoteSecret,
  type RemoteSecret,
  secretInFile,
  takeVariable,
} from "./remote-secret.ts";
import { secondsSettings } from "./seconds-settings.ts";

const env = process.env;
const port = Number(env.PORT ?? 9000);
const registrationPath = resolve(env.REGISTRATION ?? "./registration.yaml");
const homeserverUrl = env.HOMESERVER_URL ?? "http://127.0.0.1:8008";
// The AWS SDK warns on Node.js < 22 that its releases after January 2027 need 22: 9 lines from
// each thread that makes a client (every function's worker, each restart). Said once, below.
const sdkNodeNotice =
  Number(process.versions.node.split(".")[0]) < 22 &&
  env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED !== "true";
// Before any client or worker: the workers copy this environment.
if (sdkNodeNotice) env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = "true";
const applicationName = env.APPLICATION || DEFAULT_APPLICATION;
let applicationModule: string;
let chosen: Awaited<ReturnType<typeof loadApplication>>;
try {
  applicationModule = applicationModuleOf(applicationName);
  // Its settings checked here, before anything starts; the functions read them again.
  chosen = await loadApplication(applicationModule);
} catch (error) {
  console.error((error as Error).message);
  process.exit(1);
}
const { settings = {} } = chosen.module.manifest;

// Checked here, before anything starts.
let seconds: ReturnType<typeof secondsSettings>;
try {
  seconds = secondsSettings(env);
} catch (error) {
  console.error((error as Error).message);
  process.exit(1);
}
const {
  OUTBOX_BACKOFF_CAP_SECONDS: backoffCapSeconds,
  ROOM_CLAIM_LEASE_SECONDS: roomClaimLeaseSeconds,
  VISIBILITY_TIMEOUT_SECONDS: visibilityTimeoutSeconds,
} = seconds;

try {
  // An application sharing a secret with its remote service never runs without one: its routes
  // and deliveries are signed with it.
  const secretVariable = remoteSecretVariable(chosen.module.manifest);
  // Out of the environment before any worker or child process copies it.
  const secretValue = chosen.module.manifest.remoteSecret
    ? takeVariable(env, secretVariable)
    : undefined;
  const remoteSecret: RemoteSecret | undefined = chosen.module.manifest.remoteSecret
    ? await localRemoteSecret(
        { variable: secretVariable, value: secretValue, application: applicationName },
        registrationPath,
      )
    : undefined;
  const dataDir = env.DATA_DIR ? resolve(env.DATA_DIR) : undefined;
  // Encrypted rooms read and written (opt-in): the bot's device decrypts, each user's device
  // encrypts.
  const encryptedRooms = encryptedRoomsSetting(env);
  // The bot device's crypto state is encrypted under a secret of its own, kept in a file (0600)
  // from the first start on: the as_token's rotation must not lose the device.
  if (dataDir) await mkdir(dataDir, { recursive: true });
  const cryptoStore = encryptedRooms
    ? await secretInFile(cryptoStoreSecretFile(dataDir, registrationPath))
    : undefined;
  const local = await startLocalWorkers({
    applicationModule,
    port,
    registrationPath,
    homeserverUrl,
    serverName: env.SERVER_NAME ?? "localhost",
    ...(dataDir && { dataDir }),
    ...(cryptoStore && { cryptoStoreSecret: cryptoStore.secret }),
    ...(env.DYNAMODB_ENDPOINT && { dynamodbEndpoint: env.DYNAMODB_ENDPOINT }),
    ...(env.SQS_ENDPOINT && { sqsEndpoint: env.SQS_ENDPOINT }),
    ...(env.PUBLIC_BASE_URL && { publicBaseUrl: env.PUBLIC_BASE_URL }),
    ...(env.BOT_DISPLAY_NAME && { botDisplayName: env.BOT_DISPLAY_NAME }),
    ...(env.BOT_AVATAR_URL && { botAvatarUrl: env.BOT_AVATAR_URL }),
    ...(env.ADMIN_TOKEN && { adminToken: env.ADMIN_TOKEN }),
    ...(backoffCapSeconds !== undefined && {
      backoff: { ...DEFAULT_BACKOFF, capSeconds: backoffCapSeconds },
    }),
    ...(roomClaimLeaseSeconds !== undefined && { claimLeaseMs: roomClaimLeaseSeconds * 1000 }),
    ...(visibilityTimeoutSeconds !== undefined && { visibilityTimeoutSeconds }),
    ...(env.DELIVERY_ALLOWED_ADDRESSES !== undefined && {
      deliveryAllowedAddresses: parseAllowedRanges(env.DELIVERY_ALLOWED_ADDRESSES),
    }),
    ...(remoteSecret &&
      chosen.module.manifest.remoteSecret && {
        remoteSecret: remoteSecret.secret,
        remoteServiceUrl: chosen.config[chosen.module.manifest.remoteSecret.urlSetting],
      }),
  });
  // Once our parent is gone, so may be the pipe to our stdout: a failed log must not stop us.
  process.stdout.on("error", () => undefined);
  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`${signal}: stopping`);
    await local.stop();
    console.log(`metrics: ${local.metrics.summary() || "nothing counted"}`);
    process.exit(0);
  };
  process.on("SIGINT", () => void shutdown("SIGINT"));
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  // The counters CloudWatch would show in AWS, printed every minute while they change.
  let lastSummary = "";
  setInterval(() => {
    const summary = local.metrics.summary();
    if (summary !== lastSummary) console.log(`metrics: ${summary}`);
    lastSummary = summary;
  }, 60_000).unref();
  // npm passes SIGINT and SIGTERM on (`exec` in its script: no shell in between), not SIGKILL:
  // stop when our parent goes, rather than run on orphaned.
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) void shutdown("parent process exited");
  }, 500).unref();
  if (local.registrationCreated) {
    // The tokens stay in the file: printed, they would end up in terminal scrollback and logs.
    console.log(
      `Wrote a new registration with fresh tokens to ${registrationPath} (readable by you only)`,
    );
  } else {
    console.log(`Using the registration in ${registrationPath}`);
  }
  console.log(
    [
      ...(sdkNodeNotice
        ? [
            `Node.js ${process.version}: the AWS SDK's releases after January 2027 need Node.js 22 (README: Set-up)`,
          ]
        : []),
      `Application: ${applicationName}${
        Object.keys(settings).length > 0
          ? ` (${Object.entries(settings)
              .map(([name, setting]) => `${setting.description} ${chosen.config[name]}: ${name}`)
              .join(", ")})`
          : ""
      }`,
      ...(remoteSecret
        ? [
            remoteSecret.source === secretVariable
              ? `The ${applicationName} signs and checks requests with ${secretVariable}`
              : `The ${applicationName} signs and checks requests with the secret in ${remoteSecret.source}${remoteSecret.created ? " (new, readable by you only)" : ""}: give it to the remote service, or set ${secretVariable}`,
          ]
        : []),
      `Homeserver: ${homeserverUrl}`,
      `Give the homeserver ${registrationPath} (Synapse: list it in app_service_config_files and restart Synapse); its url must be ${local.url}`,
      `DynamoDB Local: ${local.dynamodbEndpoint}${env.DYNAMODB_ENDPOINT ? " (yours)" : env.DATA_DIR ? ` (data in ${resolve(env.DATA_DIR)})` : " (in memory)"}`,
      `SQS (fauxqs): ${local.sqsEndpoint}${env.SQS_ENDPOINT ? " (yours)" : local.queuesFile ? ` (queued work kept in ${local.queuesFile} at a clean stop)` : " (in memory: queued work is lost at a stop; set DATA_DIR to keep it)"}`,
      ...local.appRoutes.map((route) => `Application route: ${route}`),
      // Printed on purpose (unlike the registration's tokens): it is this run's, fresh unless
      // ADMIN_TOKEN was given, and opening the console needs it.
      env.ADMIN_TOKEN
        ? `Operator console: ${local.url}/admin (token: ADMIN_TOKEN)`
        : `Operator console: ${local.url}/admin with the admin token ${local.adminToken} (new at each start; set ADMIN_TOKEN to keep one)`,
      `Deliveries to remote services may reach public addresses${local.deliveryAllowedAddresses.length > 0 ? ` and ${local.deliveryAllowedAddresses.join(", ")}` : " only"} (DELIVERY_ALLOWED_ADDRESSES${env.DELIVERY_ALLOWED_ADDRESSES === undefined ? ": loopback by default in local mode" : ""})`,
      `listening on ${local.url}`,
    ].join("\n"),
  );
} catch (error) {
  console.error(error instanceof RegistrationError ? error.message : error);
  process.exit(1);
}
