import { pino, type Logger as PinoLogger, type Level } from 'pino';

export type Logger = PinoLogger;

/** JSON lines on stdout (or `fd`): one per request and per background action, ready for any log shipper. */
export function createLogger(level: Level | 'silent' = 'info', fd = 1): Logger {
  return pino({ level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination(fd));
}
