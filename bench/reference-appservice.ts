// The reference Node appservice server (npm `matrix-appservice`, in-memory txnId dedupe),
// run in a process of its own for the benchmark: PORT and HS_TOKEN from the environment.
import { AppService } from "matrix-appservice";

const appservice = new AppService({ homeserverToken: process.env.HS_TOKEN as string });
let events = 0;
appservice.on("event", () => void events++);
await appservice.listen(Number(process.env.PORT), "127.0.0.1", 511);
console.log(`listening on http://127.0.0.1:${process.env.PORT}`);
process.on("SIGTERM", () => {
  console.log(`events emitted: ${events}`);
  process.exit(0);
});
