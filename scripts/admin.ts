// `npm run admin -- …`: the operator console's operations from the command line.
import { userInfo } from "node:os";
import { parseArgs } from "node:util";
import { type ConsoleTarget, consoleOfStack, consoleRequest } from "./admin-client.ts";
import { defaultStackClients } from "./registration-from-stack.ts";

const usage = `Usage: npm run admin -- (--url URL [--token TOKEN] | --stack NAME [--region R]) COMMAND
  status                                   health: homeserver, last transaction, queues, dead letters, errors
  traffic                                  the last transactions and outbound calls
  dlq list [--direction D] [--room R]      dead letters (D: inbound or outbound)
  dlq replay ID… | --all [--room R] [--direction D]
                                           put them back on their queue, in their room's order
  dlq discard ID… | --all [--room R] [--direction D]
                                           delete them for good
The token: --token, else ADMIN_TOKEN (local mode prints it at start), else the stack's secret.
Replays and discards are logged with your user name (--as NAME to give another).`;

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    url: { type: "string" },
    token: { type: "string" },
    stack: { type: "string" },
    region: { type: "string" },
    direction: { type: "string" },
    room: { type: "string" },
    all: { type: "boolean" },
    as: { type: "string" },
    help: { type: "boolean", short: "h" },
  },
});

const fail = (message: string): never => {
  console.error(message);
  process.exit(2);
};

if (values.help || positionals.length === 0) {
  console.log(usage);
  process.exit(values.help ? 0 : 2);
}

const target: ConsoleTarget = values.stack
  ? await consoleOfStack(values.stack, defaultStackClients(values.region))
  : {
      url: values.url ?? fail(`--url or --stack is needed\n${usage}`),
      token:
        values.token ??
        process.env.ADMIN_TOKEN ??
        fail("--token or ADMIN_TOKEN is needed with --url"),
    };
const operator = values.as ?? userInfo().username;
const directions =
  values.direction === undefined
    ? (["inbound", "outbound"] as const)
    : values.direction === "inbound" || values.direction === "outbound"
      ? [values.direction]
      : fail("--direction is inbound or outbound");

interface DeadLetter {
  id: string;
  direction: "inbound" | "outbound";
  roomId?: string;
  group: string;
  kind: string;
  reason: { status?: number; errcode?: string; error: string };
  attempts?: number;
  ageSeconds: number;
}

const list = async (): Promise<DeadLetter[]> => {
  const query = new URLSearchParams({
    ...(values.direction && { direction: values.direction }),
    ...(values.room && { room: values.room }),
  });
  const answer = (await consoleRequest(target, `dead-letters?${query}`)) as {
    deadLetters: DeadLetter[];
  };
  return answer.deadLetters;
};

/** Replays or discards: the IDs named (each on its own queue), or --all (of --room). */
const operate = async (operation: "replay" | "discard", ids: string[]) => {
  const selections: object[] = [];
  if (ids.length > 0) {
    const known = await list();
    for (const direction of directions) {
      const own = ids.filter((id) => known.some((l) => l.id === id && l.direction === direction));
      if (own.length > 0) selections.push({ direction, ids: own });
    }
    const unknown = ids.filter((id) => !known.some((letter) => letter.id === id));
    if (unknown.length > 0) console.error(`not found: ${unknown.join(", ")}`);
  } else if (values.all) {
    for (const direction of directions) {
      selections.push(values.room ? { direction, room: values.room } : { direction, all: true });
    }
  } else {
    fail(`dlq ${operation} takes dead-letter IDs or --all\n${usage}`);
  }
  let done = 0;
  for (const selection of selections) {
    const result = (await consoleRequest(
      target,
      `dead-letters/${operation}`,
      selection,
      operator,
    )) as { done: string[]; skipped: { id: string; why: string }[] };
    done += result.done.length;
    for (const skipped of result.skipped) console.error(`skipped ${skipped.id}: ${skipped.why}`);
  }
  console.log(`${operation === "replay" ? "replayed" : "discarded"} ${done}`);
};

const [command, subcommand, ...ids] = positionals;
try {
  if (command === "status" || command === "traffic") {
    console.log(JSON.stringify(await consoleRequest(target, command), null, 2));
  } else if (command === "dlq" && subcommand === "list") {
    const letters = await list();
    for (const l of letters) {
      const reason = [l.reason.status, l.reason.errcode, l.reason.error].filter(Boolean).join(" ");
      console.log(
        [
          l.id,
          l.direction,
          l.roomId ?? l.group,
          l.kind,
          reason,
          `attempts ${l.attempts ?? "?"}`,
          `${l.ageSeconds} s ago`,
        ].join("\t"),
      );
    }
    console.log(`${letters.length} dead letters`);
  } else if (command === "dlq" && (subcommand === "replay" || subcommand === "discard")) {
    await operate(subcommand, ids);
  } else {
    fail(usage);
  }
} catch (error) {
  fail((error as Error).message);
}
