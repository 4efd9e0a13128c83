// Strict request decoding (src/cri/wire-check.ts): well-formed requests decode as before; invalid UTF-8,
// truncation and bad wire types become an INVALID_ARGUMENT marker instead of a throw (INTERNAL) or U+FFFD.
import { describe, it, expect } from 'vitest';
import protobuf from 'protobufjs';
import { status } from '@grpc/grpc-js';
import { strictDeserializer, rejectUndecodable } from '../../src/cri/wire-check.js';
import { PROTO_PATH, criPackageDefinition } from '../../src/cri/proto.js';
import type { ServiceDefinition } from '@grpc/proto-loader';

const root = protobuf.loadSync(PROTO_PATH);
const ld = (field: number, bytes: Uint8Array) => Buffer.from(protobuf.Writer.create().uint32((field << 3) | 2).bytes(bytes).finish());
const des = (criPackageDefinition()['runtime.v1.RuntimeService'] as ServiceDefinition).PodSandboxStatus.requestDeserialize;

function codeOf(req: unknown): number | undefined {
  let code: number | undefined;
  const h = rejectUndecodable(((_c: unknown, cb: (e: null, v: object) => void) => cb(null, {})) as never, false) as unknown as (c: { request: unknown }, cb: (e: { code?: number } | null) => void) => void;
  h({ request: req }, (e) => (code = e?.code ?? 0));
  return code;
}

describe('strict request decoding', () => {
  it('decodes well-formed requests unchanged, unknown fields included', () => {
    const t = root.lookupType('runtime.v1.PodSandboxStatusRequest');
    const buf = Buffer.concat([Buffer.from(t.encode({ podSandboxId: 'abc', verbose: true }).finish()), ld(77, Buffer.from('x'))]);
    expect(des(buf)).toMatchObject({ pod_sandbox_id: 'abc', verbose: true });
    expect(codeOf(des(buf))).toBe(0);
  });

  it('refuses invalid UTF-8, also in nested messages and map keys', () => {
    expect(codeOf(des(ld(1, Buffer.from([0x61, 0xff]))))).toBe(status.INVALID_ARGUMENT);
    const list = strictDeserializer(PROTO_PATH, 'runtime.v1.ListPodSandboxRequest', () => ({}));
    const entry = Buffer.concat([ld(1, Buffer.from([0xc3, 0x28])), ld(2, Buffer.from('v'))]);
    expect(codeOf(list(ld(1, ld(3, entry))))).toBe(status.INVALID_ARGUMENT); // filter.label_selector key
    expect(codeOf(list(ld(1, ld(1, Buffer.from('ok')))))).toBe(0);
  });

  it('refuses truncated fields, varints and group wire types', () => {
    expect(codeOf(des(Buffer.from([0x0a, 0xff, 0xff, 0x03, 0x01])))).toBe(status.INVALID_ARGUMENT);
    expect(codeOf(des(Buffer.from([0x10, 0xff])))).toBe(status.INVALID_ARGUMENT);
    expect(codeOf(des(Buffer.from([0x0b])))).toBe(status.INVALID_ARGUMENT);
    expect(codeOf(des(Buffer.from([0x00, 0x01])))).toBe(status.INVALID_ARGUMENT);
  });
});
