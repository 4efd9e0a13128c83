// Generates TypeScript types for proto/api.proto into src/gen (not committed: `npm run build` runs this).
// The loader options here must match src/cri/proto.ts so the types describe what grpc-js really hands us.
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const bin = require.resolve('@grpc/proto-loader/build/bin/proto-loader-gen-types.js');
rmSync('src/gen', { recursive: true, force: true });
execFileSync(process.execPath, [bin, '--keepCase', '--longs=String', '--enums=String', '--defaults', '--oneofs',
  '--grpcLib=@grpc/grpc-js', '--outDir=src/gen', '--importFileExtension=.js', 'proto/api.proto'], { stdio: 'inherit' });
