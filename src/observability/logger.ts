import { pino, type Logger as PinoLogger, type Level } from 'pino';
import pretty from 'pino-pretty';

export type Logger = PinoLogger;

export type LogFormat = 'json' | 'pretty';

/**
 * JSON lines on stdout (or `fd`): one per request and per background action, ready for any log shipper. `pretty`
 * formats the same records for a person at a terminal, in this process (pino-pretty as a stream, not a transport
 * thread), so the order of lines and the exit path stay those of the JSON output.
 */
export function createLogger(level: Level | 'silent' = 'info', fd = 1, format: LogFormat = 'json'): Logger {
  const options = { level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime };
  if (format === 'pretty') return pino(options, pretty({ destination: fd, sync: true, translateTime: 'SYS:standard' }));
  return pino(options, pino.destination(fd));
}
