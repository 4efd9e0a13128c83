// Looking objects up the way crictl users type them: the full ID or any unambiguous prefix of it.
import { invalidArgument } from '../errors.js';

/**
 * The object with this exact id, else the only one whose id starts with it; undefined when none does.
 * '' is INVALID_ARGUMENT, and so is a prefix shared by several. `what` names the kind ("container") and
 * `key` the error context field ("container", "pod").
 */
export function findByIdOrPrefix<T extends { id: string }>(items: Map<string, T>, idOrPrefix: string, what: string, key: string): T | undefined {
  if (idOrPrefix === '') throw invalidArgument(`${what} id is required`);
  const exact = items.get(idOrPrefix);
  if (exact) return exact;
  const matches = [...items.values()].filter((x) => x.id.startsWith(idOrPrefix));
  if (matches.length > 1) throw invalidArgument(`${what} id prefix "${idOrPrefix}" is ambiguous`, { [key]: idOrPrefix });
  return matches[0];
}
