type LogMethod = (message: string, ...attributes: Record<string, unknown>[]) => void;

/** The logging the core needs; Powertools' Logger provides it in Lambda and locally. */
export interface Log {
  debug: LogMethod;
  info: LogMethod;
  warn: LogMethod;
  error: LogMethod;
}
