// Questions asked of parsed JSON (and YAML) documents.

/** A JSON object (a map): not null, not an array. */
export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
