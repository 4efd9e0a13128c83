// Loads proto/api.proto for grpc-js. The options must stay in step with scripts/gen-types.mjs, which
// generates the TypeScript types (src/gen) describing exactly the objects these options produce.
import { loadSync, type Options, type PackageDefinition } from '@grpc/proto-loader';
import { loadPackageDefinition } from '@grpc/grpc-js';
import { fileURLToPath } from 'node:url';
import type { ProtoGrpcType } from '../gen/api.js';

export const PROTO_PATH = fileURLToPath(new URL('../../proto/api.proto', import.meta.url));

export const LOADER_OPTIONS: Options = {
  keepCase: true, // CRI field names stay verbatim (pod_sandbox_id, not podSandboxId)
  longs: String, // int64 nanosecond timestamps do not fit a double
  enums: String,
  defaults: true,
  oneofs: true,
};

let cached: ProtoGrpcType | undefined;
let definition: PackageDefinition | undefined;

/** The parsed proto (descriptors of every message), parsed once per process. */
export function criPackageDefinition(): PackageDefinition {
  definition ??= loadSync(PROTO_PATH, LOADER_OPTIONS);
  return definition;
}

export function criProto(): ProtoGrpcType {
  cached ??= loadPackageDefinition(criPackageDefinition()) as unknown as ProtoGrpcType;
  return cached;
}

/** Same limit as kubelet: List* responses on a busy node exceed grpc's 4 MiB default. */
export const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
