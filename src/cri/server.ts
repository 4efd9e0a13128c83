// Builds the gRPC server: every rpc of both services is bound. Rpcs that no service module implements
// answer UNIMPLEMENTED naming the method, never a fake success.
import * as grpc from '@grpc/grpc-js';
import { criProto, MAX_MESSAGE_BYTES } from './proto.js';
import { toServiceError, grpcCode } from './grpc-errors.js';
import type { RuntimeServiceHandlers } from '../gen/runtime/v1/RuntimeService.js';
import type { ImageServiceHandlers } from '../gen/runtime/v1/ImageService.js';
import type { Logger } from '../log.js';
import { errorMessage, unimplemented, cancelled } from '../errors.js';
import { rejectUndecodable } from './wire-check.js';

export interface CriHandlers {
  runtime: Partial<RuntimeServiceHandlers>;
  image: Partial<ImageServiceHandlers>;
}

/** Each rpc module returns the handlers it implements; they are merged here. */
export function mergeHandlers(parts: Partial<CriHandlers>[]): CriHandlers {
  const out: CriHandlers = { runtime: {}, image: {} };
  for (const p of parts) {
    Object.assign(out.runtime, p.runtime);
    Object.assign(out.image, p.image);
  }
  return out;
}

/**
 * Adapts an async function to a grpc-js unary handler: its result is the response, whatever it throws
 * is mapped to a status by src/cri/grpc-errors.ts.
 */
export function unary<Req, Res>(
  fn: (req: Req, call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res>,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    fn(call.request, call).then(
      (res) => {
        answered.add(call);
        callback(null, res);
      },
      (err: unknown) => {
        answered.add(call);
        callback(toServiceError(err));
      },
    );
  };
}

/** Calls already answered: grpc-js still emits 'cancelled' for them when the stream closes. */
const answered = new WeakSet<object>();

/** A signal that fires when the client cancels the call or its deadline passes (reason: a CANCELLED error). */
export function cancelSignal(call: { once(event: 'cancelled', listener: () => void): unknown }): AbortSignal {
  const abort = new AbortController();
  call.once('cancelled', () => {
    if (!answered.has(call)) abort.abort(cancelled('the client cancelled the call or its deadline passed'));
  });
  return abort.signal;
}

export function unimplementedHandler(service: string, method: string, streaming: boolean): grpc.UntypedHandleCall {
  const error = toServiceError(unimplemented(`${service}/${method} is not implemented by skiff yet`));
  if (streaming) {
    return ((call: grpc.ServerWritableStream<unknown, unknown>) => call.emit('error', error)) as grpc.UntypedHandleCall;
  }
  return ((_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb(error)) as grpc.UntypedHandleCall;
}

function bindAll(
  service: grpc.ServiceDefinition,
  serviceName: string,
  given: Record<string, grpc.UntypedHandleCall | undefined>,
  log: Logger,
): grpc.UntypedServiceImplementation {
  const impl: grpc.UntypedServiceImplementation = {};
  for (const [method, def] of Object.entries(service)) {
    const handler = rejectUndecodable(given[method] ?? unimplementedHandler(serviceName, method, def.responseStream), def.responseStream);
    impl[method] = def.responseStream ? handler : logged(serviceName, method, handler, log);
  }
  return impl;
}

/** Debug-logs every unary call with its duration and outcome. */
function logged(service: string, method: string, handler: grpc.UntypedHandleCall, log: Logger): grpc.UntypedHandleCall {
  const h = handler as grpc.handleUnaryCall<unknown, unknown>;
  return ((call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
    const start = process.hrtime.bigint();
    h(call, (err, value) => {
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      if (err) {
        const code = err.code ?? grpcCode(err);
        const level = code === grpc.status.UNIMPLEMENTED || code === grpc.status.NOT_FOUND ? 'debug' : 'warn';
        log[level]({ rpc: `${service}/${method}`, ms, code, err: err.details ?? errorMessage(err) }, 'rpc failed');
      } else {
        log.debug({ rpc: `${service}/${method}`, ms }, 'rpc');
      }
      cb(err, value);
    });
  }) as grpc.UntypedHandleCall;
}

export function createServer(handlers: CriHandlers, log: Logger): grpc.Server {
  const server = new grpc.Server({
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  });
  const v1 = criProto().runtime.v1;
  server.addService(
    v1.RuntimeService.service,
    bindAll(v1.RuntimeService.service, 'runtime.v1.RuntimeService', handlers.runtime as Record<string, grpc.UntypedHandleCall>, log),
  );
  server.addService(
    v1.ImageService.service,
    bindAll(v1.ImageService.service, 'runtime.v1.ImageService', handlers.image as Record<string, grpc.UntypedHandleCall>, log),
  );
  return server;
}
