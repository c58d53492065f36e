import { Logger } from "@aws-lambda-powertools/logger";

/** Structured JSON logs (level from `POWERTOOLS_LOG_LEVEL`); never given a token to log. */
export const createLogger = () => new Logger({ serviceName: "matrix-appservice" });
