import { pino } from 'pino';

/** The logger type every module takes (pino's). */
export type Logger = pino.Logger;

/** Create the process logger: JSON lines on stdout at `level` (default info). */
export function createLogger(level = 'info'): Logger {
  return pino({ level, base: { name: 'portcullis' } });
}
