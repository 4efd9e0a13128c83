// The gRPC edge: an rpc no module implements answers UNIMPLEMENTED through the one kind->code mapping
// (src/cri/grpc-errors.ts), like every other error.
import { describe, it, expect } from 'vitest';
import { status, type ServiceError, type sendUnaryData } from '@grpc/grpc-js';
import { unimplementedHandler } from '../../src/cri/server.js';
import { toServiceError, MAX_STATUS_MESSAGE } from '../../src/cri/grpc-errors.js';
import { invalidArgument } from '../../src/errors.js';

describe('unimplemented rpcs', () => {
  it('answer UNIMPLEMENTED naming the method, as a full service error', async () => {
    const handler = unimplementedHandler('RuntimeService', 'Frobnicate', false) as (call: unknown, cb: sendUnaryData<unknown>) => void;
    const err = await new Promise<Partial<ServiceError>>((resolve) => handler({}, (e) => resolve(e as Partial<ServiceError>)));
    expect(err.code).toBe(status.UNIMPLEMENTED);
    expect(err.details).toContain('RuntimeService/Frobnicate');
    expect(err.message).toBe(err.details);
  });
});

describe('error statuses', () => {
  it('keeps the code and cuts a huge message (a hostile name in it) to a size every client takes', () => {
    const e = toServiceError(invalidArgument(`layer symlink target "${'t'.repeat(3_000_000)}" is bad`));
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    expect(e.details!.length).toBeLessThanOrEqual(MAX_STATUS_MESSAGE + 50);
    expect(e.details).toMatch(/^layer symlink target "ttt.*truncated/);
  });
});

describe('error statuses stay sendable', () => {
  it('never cuts a character in half (grpc-js encodes the message with encodeURI, which throws on half of one)', () => {
    for (let pad = 0; pad < 4; pad++) {
      const e = toServiceError(invalidArgument(`${'x'.repeat(MAX_STATUS_MESSAGE - 2 + pad)}${'😀'.repeat(100)}`));
      expect(() => encodeURI(e.details!)).not.toThrow();
    }
    // a lone surrogate anywhere (not from a cut) is made sendable too
    expect(() => encodeURI(toServiceError(invalidArgument('bad \ud800 name')).details!)).not.toThrow();
  });
});
