// conmon's sync message (api v1), one JSON object a line on the sync pipe: {"data": N, "message": "…"}.
// After a create, N is the container's pid (negative: it failed, message says why); for an exec, the
// first is the process's pid and the second its exit code. Older conmons said "pid" instead of "data".

export interface ConmonSync {
  /** NaN when the message carries no number */
  value: number;
  message?: string;
}

/** Throws on a line that is not JSON. */
export function parseConmonSync(line: string): ConmonSync {
  const v = JSON.parse(line) as { data?: unknown; pid?: unknown; message?: unknown };
  const value = typeof v.data === 'number' ? v.data : typeof v.pid === 'number' ? v.pid : NaN;
  return { value, message: typeof v.message === 'string' ? v.message : undefined };
}
