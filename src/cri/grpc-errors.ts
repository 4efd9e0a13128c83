// The one place where runtime errors become gRPC statuses.
import { status, type ServiceError, Metadata } from '@grpc/grpc-js';
import { SkiffError, type ErrorKind, errorMessage } from '../errors.js';

const CODES: Record<ErrorKind, status> = {
  invalid_argument: status.INVALID_ARGUMENT,
  not_found: status.NOT_FOUND,
  already_exists: status.ALREADY_EXISTS,
  failed_precondition: status.FAILED_PRECONDITION,
  permission_denied: status.PERMISSION_DENIED,
  resource_exhausted: status.RESOURCE_EXHAUSTED,
  unavailable: status.UNAVAILABLE,
  deadline_exceeded: status.DEADLINE_EXCEEDED,
  cancelled: status.CANCELLED,
  unimplemented: status.UNIMPLEMENTED,
  internal: status.INTERNAL,
};

export function grpcCode(err: unknown): status {
  return err instanceof SkiffError ? CODES[err.kind] : status.UNKNOWN;
}

/**
 * Longest status message sent, in UTF-8 bytes. A message can quote what a client or an image supplied (a layer's 3 MB link
 * target); a status that big broke the connection instead of reporting the error.
 */
export const MAX_STATUS_MESSAGE = 4096;

export function toServiceError(err: unknown): Partial<ServiceError> {
  const code = grpcCode(err);
  // through UTF-8 and back: a cut never leaves half a character, and a lone surrogate (which makes grpc-js's
  // encodeURI throw, in a callback nothing catches) becomes U+FFFD
  const bytes = Buffer.from(errorMessage(err), 'utf8');
  const details = bytes.length > MAX_STATUS_MESSAGE ? `${bytes.subarray(0, MAX_STATUS_MESSAGE).toString('utf8')}… (${bytes.length - MAX_STATUS_MESSAGE} more bytes truncated)` : bytes.toString('utf8');
  return { code, details, message: details, metadata: new Metadata(), name: 'ServiceError' };
}
