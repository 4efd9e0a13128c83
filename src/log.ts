// Structured JSON logs on stderr. Children carry the object they are about: log.child({ pod: id }).
import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };
export const LOG_LEVELS: readonly LevelWithSilent[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

export function createLogger(level: LevelWithSilent): Logger {
  // Synchronous destination: a crash must not swallow the lines that explain it.
  return pino(
    { level, base: { name: 'skiff' }, redact: ['auth.password', 'auth.auth', 'auth.identity_token', 'auth.registry_token'] },
    pino.destination({ dest: 2, sync: true }),
  );
}
