import { pino, type Logger } from 'pino';

export function createLogger(level: string, name = 'meshlane-worker'): Logger {
  return pino({ name, level }, pino.destination(2));
}
export type { Logger };
