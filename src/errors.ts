// One error type for the whole runtime. Lower layers say *what kind* of failure happened and on which
// object; src/cri/grpc-errors.ts is the only place that turns a kind into a gRPC status code.

export type ErrorKind =
  | 'invalid_argument'
  | 'not_found'
  | 'already_exists'
  | 'failed_precondition'
  | 'permission_denied'
  | 'resource_exhausted'
  | 'unavailable'
  | 'deadline_exceeded'
  | 'cancelled'
  | 'unimplemented'
  | 'internal';

/** Identifies the object an error is about, e.g. { pod: 'ab12…' } or { image: 'busybox', path: '/x' }. */
export type ErrorContext = Record<string, string | number | undefined>;

export class SkiffError extends Error {
  readonly kind: ErrorKind;
  readonly context: ErrorContext;

  constructor(kind: ErrorKind, message: string, context: ErrorContext = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SkiffError';
    this.kind = kind;
    this.context = context;
  }

  /** The message with its context appended, e.g. `image not found (image=busybox)`. */
  describe(): string {
    const parts = Object.entries(this.context)
      .filter(([, v]) => v !== undefined && v !== '')
      .map(([k, v]) => `${k}=${String(v)}`);
    return parts.length > 0 ? `${this.message} (${parts.join(', ')})` : this.message;
  }
}

const make =
  (kind: ErrorKind) =>
  (message: string, context?: ErrorContext, cause?: unknown): SkiffError =>
    new SkiffError(kind, message, context, cause === undefined ? undefined : { cause });

export const invalidArgument = make('invalid_argument');
export const notFound = make('not_found');
export const alreadyExists = make('already_exists');
export const failedPrecondition = make('failed_precondition');
export const permissionDenied = make('permission_denied');
export const resourceExhausted = make('resource_exhausted');
export const unavailable = make('unavailable');
export const deadlineExceeded = make('deadline_exceeded');
export const cancelled = make('cancelled');
export const unimplemented = make('unimplemented');
export const internal = make('internal');

/** A short, safe description of any thrown value. */
export function errorMessage(err: unknown): string {
  if (err instanceof SkiffError) return err.describe();
  if (err instanceof Error) return err.message;
  return String(err);
}

/** Node system errors carry a `code` such as ENOENT; this reads it without `any`. */
export function errnoCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code = (err).code;
    return typeof code === 'string' ? code : undefined;
  }
  return undefined;
}

const OUT_OF_RESOURCES = new Set(['ENOSPC', 'EDQUOT', 'EMFILE', 'ENFILE', 'ENOMEM']);

/**
 * Gives a system call's error (one with an errno code: ENOSPC, EIO, …) a kind: a full disk or exhausted
 * descriptors are RESOURCE_EXHAUSTED, anything else INTERNAL. Undefined for errors that are not from a
 * system call, which the caller knows how to classify.
 */
export function fromSystemError(err: unknown, what: string, context?: ErrorContext): SkiffError | undefined {
  const code = errnoCode(err);
  if (!code || !/^E[A-Z0-9]+$/.test(code)) return undefined;
  const make = OUT_OF_RESOURCES.has(code) ? resourceExhausted : internal;
  return make(`${what}: ${errorMessage(err)}`, context, err);
}
