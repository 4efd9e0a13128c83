// A plain CRI client: works against skiff or any other CRI runtime's socket (containerd, CRI-O).
import * as grpc from '@grpc/grpc-js';
import { criProto, MAX_MESSAGE_BYTES } from '../cri/proto.js';
import type { MethodDefinition } from '@grpc/proto-loader';
import type { RuntimeServiceClient, RuntimeServiceDefinition } from '../gen/runtime/v1/RuntimeService.js';
import type { ImageServiceClient, ImageServiceDefinition } from '../gen/runtime/v1/ImageService.js';

export const DEFAULT_ENDPOINT = 'unix:///run/skiff/skiff.sock';

/** Accepts crictl's spellings: unix:///path, unix:/path, or a bare /path. */
export function normalizeEndpoint(endpoint: string): string {
  if (endpoint.startsWith('unix://')) return endpoint;
  if (endpoint.startsWith('unix:')) return `unix://${endpoint.slice('unix:'.length)}`;
  if (endpoint.startsWith('/')) return `unix://${endpoint}`;
  return endpoint;
}

export interface CriClient {
  runtime: RuntimeServiceClient;
  image: ImageServiceClient;
  /** Per-call timeout in ms; 0 means none. */
  timeoutMs: number;
  close(): void;
}

export function connect(endpoint: string, timeoutMs = 0): CriClient {
  const target = normalizeEndpoint(endpoint);
  const v1 = criProto().runtime.v1;
  const opts = { 'grpc.max_receive_message_length': MAX_MESSAGE_BYTES, 'grpc.max_send_message_length': MAX_MESSAGE_BYTES };
  const runtime = new v1.RuntimeService(target, grpc.credentials.createInsecure(), opts);
  const image = new v1.ImageService(target, grpc.credentials.createInsecure(), opts);
  return {
    runtime,
    image,
    timeoutMs,
    close() {
      runtime.close();
      image.close();
    },
  };
}

type Def<D, K extends keyof D> = D[K] extends MethodDefinition<infer Req, infer _Res, infer _ReqOut, infer Res> ? { req: Req; res: Res } : never;
/** GetContainerEvents is the CRI's only streaming rpc; everything else is unary. */
type UnaryNames<D> = Exclude<keyof D, 'GetContainerEvents'>;
type Callable = (req: unknown, options: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: unknown) => void) => unknown;

function invoke<Res>(service: object, method: string, req: unknown, timeoutMs: number): Promise<Res> {
  const fn = (service as Record<string, Callable>)[method];
  if (typeof fn !== 'function') return Promise.reject(new Error(`no such rpc: ${method}`));
  const options: grpc.CallOptions = timeoutMs > 0 ? { deadline: new Date(Date.now() + timeoutMs) } : {};
  return new Promise((resolve, reject) => {
    fn.call(service, req, options, (err, res) => (err ? reject(err) : resolve(res as Res)));
  });
}

/** Awaits a RuntimeService unary rpc: `await runtimeCall(c, 'Version', {})`. timeoutMs 0 = no deadline. */
export function runtimeCall<K extends UnaryNames<RuntimeServiceDefinition>>(
  c: CriClient,
  method: K,
  req: Def<RuntimeServiceDefinition, K>['req'],
  timeoutMs = c.timeoutMs,
): Promise<Def<RuntimeServiceDefinition, K>['res']> {
  return invoke(c.runtime, method as string, req, timeoutMs);
}

/** Awaits an ImageService unary rpc: `await imageCall(c, 'ListImages', {})`. */
export function imageCall<K extends UnaryNames<ImageServiceDefinition>>(
  c: CriClient,
  method: K,
  req: Def<ImageServiceDefinition, K>['req'],
  timeoutMs = c.timeoutMs,
): Promise<Def<ImageServiceDefinition, K>['res']> {
  return invoke(c.image, method as string, req, timeoutMs);
}
