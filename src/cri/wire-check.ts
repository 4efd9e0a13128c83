// Strict decoding of CRI requests. protobufjs decodes leniently: invalid UTF-8 in a string field turns
// into U+FFFD (so an id or path the client never sent reaches the runtime) and some truncated messages
// decode without complaint; and when decoding does throw, grpc-js answers INTERNAL. Here every request is
// walked on the wire first (bounds, wire types, UTF-8 of every known string field, map keys and values,
// nested messages) and a request that fails is handed to the handler as a marker, which answers
// INVALID_ARGUMENT naming the field, before any handler code sees it.
import protobuf from 'protobufjs';
import * as grpc from '@grpc/grpc-js';
import { invalidArgument, errorMessage, SkiffError } from '../errors.js';
import { toServiceError } from './grpc-errors.js';

const UNDECODABLE = Symbol('undecodable request');
type Undecodable = { [UNDECODABLE]: SkiffError };

/** No CRI message nests anywhere near this deep; a request that does is hostile. */
const MAX_DEPTH = 64;
const utf8 = new TextDecoder('utf-8', { fatal: true });

class Wire {
  pos: number;
  constructor(
    readonly buf: Uint8Array,
    readonly end: number,
    start = 0,
  ) {
    this.pos = start;
  }
  varint(): bigint {
    let v = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      if (this.pos >= this.end) throw invalidArgument('truncated varint');
      const b = this.buf[this.pos++];
      v |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return v;
    }
    throw invalidArgument('varint longer than 10 bytes');
  }
  skip(n: number): void {
    if (n < 0 || this.pos + n > this.end) throw invalidArgument('field length runs past the end of the message');
    this.pos += n;
  }
}

/** Throws invalid_argument unless `buf[start, end)` is a well-formed encoding of `type`. */
function walk(buf: Uint8Array, start: number, end: number, type: protobuf.Type | undefined, path: string, depth: number): void {
  if (depth > MAX_DEPTH) throw invalidArgument(`message nested deeper than ${MAX_DEPTH} levels`, { field: path });
  const w = new Wire(buf, end, start);
  while (w.pos < end) {
    const tag = w.varint();
    const id = Number(tag >> 3n);
    const wt = Number(tag & 7n);
    if (id === 0) throw invalidArgument('field number 0', { field: path });
    const field = type?.fieldsById[id];
    const name = field ? `${path}.${field.name}` : `${path}.#${id}`;
    switch (wt) {
      case 0:
        w.varint();
        break;
      case 1:
        w.skip(8);
        break;
      case 5:
        w.skip(4);
        break;
      case 2: {
        const len = w.varint();
        if (len > BigInt(end - w.pos)) throw invalidArgument('field length runs past the end of the message', { field: name });
        const from = w.pos;
        w.skip(Number(len));
        if (field) checkLengthDelimited(field, buf, from, w.pos, name, depth);
        break;
      }
      default:
        // groups (3, 4) are proto2-only and never part of the CRI; 6 and 7 do not exist
        throw invalidArgument(`unsupported wire type ${wt}`, { field: name });
    }
  }
}

function checkLengthDelimited(field: protobuf.Field, buf: Uint8Array, from: number, to: number, name: string, depth: number): void {
  field.resolve();
  if (field instanceof protobuf.MapField) {
    // a map entry is a small message: key = 1, value = 2
    const w = new Wire(buf, to, from);
    while (w.pos < to) {
      const tag = w.varint();
      const id = Number(tag >> 3n);
      if (Number(tag & 7n) !== 2) {
        const wt = Number(tag & 7n);
        if (wt === 0) w.varint();
        else if (wt === 1) w.skip(8);
        else if (wt === 5) w.skip(4);
        else throw invalidArgument(`unsupported wire type ${wt}`, { field: name });
        continue;
      }
      const len = w.varint();
      if (len > BigInt(to - w.pos)) throw invalidArgument('field length runs past the end of the message', { field: name });
      const s = w.pos;
      w.skip(Number(len));
      const kind = id === 1 ? field.keyType : id === 2 ? field.type : undefined;
      if (kind === 'string') checkUtf8(buf, s, w.pos, `${name}[${id === 1 ? 'key' : 'value'}]`);
      else if (id === 2 && field.resolvedType instanceof protobuf.Type) walk(buf, s, w.pos, field.resolvedType, name, depth + 1);
    }
    return;
  }
  if (field.type === 'string') checkUtf8(buf, from, to, name);
  else if (field.resolvedType instanceof protobuf.Type) walk(buf, from, to, field.resolvedType, name, depth + 1);
}

function checkUtf8(buf: Uint8Array, from: number, to: number, name: string): void {
  try {
    utf8.decode(buf.subarray(from, to));
  } catch {
    throw invalidArgument('string field is not valid UTF-8', { field: name });
  }
}

let root: protobuf.Root | undefined;

/**
 * Wraps a proto-loader deserializer: a request that is malformed on the wire, carries invalid UTF-8 or
 * does not decode becomes an Undecodable marker instead of an exception (grpc-js would answer INTERNAL).
 */
export function strictDeserializer(protoPath: string, typeName: string, decode: (buf: Buffer) => object): (buf: Buffer) => object {
  return (buf: Buffer) => {
    try {
      root ??= protobuf.loadSync(protoPath);
      walk(buf, 0, buf.length, root.lookupType(typeName), typeName.split('.').pop()!, 0);
      return decode(buf);
    } catch (err) {
      const e = err instanceof SkiffError ? err : invalidArgument(`request does not decode: ${errorMessage(err)}`, { message: typeName });
      return { [UNDECODABLE]: e } satisfies Undecodable;
    }
  };
}

function undecodable(req: unknown): SkiffError | undefined {
  return typeof req === 'object' && req !== null && UNDECODABLE in req ? (req as Undecodable)[UNDECODABLE] : undefined;
}

/** Answers INVALID_ARGUMENT for a request strictDeserializer refused; passes every other call through. */
export function rejectUndecodable(handler: grpc.UntypedHandleCall, streaming: boolean): grpc.UntypedHandleCall {
  if (streaming) {
    const h = handler as grpc.handleServerStreamingCall<unknown, unknown>;
    return ((call: grpc.ServerWritableStream<unknown, unknown>) => {
      const err = undecodable(call.request);
      if (err) call.emit('error', toServiceError(err));
      else h(call);
    }) as grpc.UntypedHandleCall;
  }
  const h = handler as grpc.handleUnaryCall<unknown, unknown>;
  return ((call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
    const err = undecodable(call.request);
    if (err) cb(toServiceError(err));
    else h(call, cb);
  }) as grpc.UntypedHandleCall;
}
