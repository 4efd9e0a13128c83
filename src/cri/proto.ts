// Loads proto/api.proto for grpc-js. The options must stay in step with scripts/gen-types.mjs, which
// generates the TypeScript types (src/gen) describing exactly the objects these options produce.
import { loadSync, type Options, type PackageDefinition, type ServiceDefinition } from '@grpc/proto-loader';
import { loadPackageDefinition } from '@grpc/grpc-js';
import { fileURLToPath } from 'node:url';
import type { ProtoGrpcType } from '../gen/api.js';
import { strictDeserializer } from './wire-check.js';

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
  if (!definition) {
    definition = loadSync(PROTO_PATH, LOADER_OPTIONS);
    // requests are checked on the wire before they decode (src/cri/wire-check.ts)
    for (const svc of ['runtime.v1.RuntimeService', 'runtime.v1.ImageService']) {
      for (const m of Object.values(definition[svc] as ServiceDefinition)) {
        const name = (m.requestType.type as { name: string }).name;
        m.requestDeserialize = strictDeserializer(PROTO_PATH, `runtime.v1.${name}`, m.requestDeserialize);
      }
    }
  }
  return definition;
}

export function criProto(): ProtoGrpcType {
  cached ??= loadPackageDefinition(criPackageDefinition()) as unknown as ProtoGrpcType;
  return cached;
}

/** Same limit as kubelet: List* responses on a busy node exceed grpc's 4 MiB default. */
export const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
