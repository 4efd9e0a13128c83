// The gRPC edge: an rpc no module implements answers UNIMPLEMENTED through the one kind->code mapping
// (src/cri/grpc-errors.ts), like every other error.
import { describe, it, expect } from 'vitest';
import { status, type ServiceError, type sendUnaryData } from '@grpc/grpc-js';
import { unimplementedHandler } from '../../src/cri/server.js';

describe('unimplemented rpcs', () => {
  it('answer UNIMPLEMENTED naming the method, as a full service error', async () => {
    const handler = unimplementedHandler('RuntimeService', 'Frobnicate', false) as (call: unknown, cb: sendUnaryData<unknown>) => void;
    const err = await new Promise<Partial<ServiceError>>((resolve) => handler({}, (e) => resolve(e as Partial<ServiceError>)));
    expect(err.code).toBe(status.UNIMPLEMENTED);
    expect(err.details).toContain('RuntimeService/Frobnicate');
    expect(err.message).toBe(err.details);
  });
});
