// What the streaming server needs from the runtime: run a command in a container, attach to a container's
// stdio, open a TCP connection inside a pod. The protocols (src/stream/*) know nothing of containers; the
// OCI side (src/oci/streaming-backends.ts) knows nothing of SPDY or WebSocket.
import { EventEmitter } from 'node:events';
import type { Duplex, Readable, Writable } from 'node:stream';
import type { TerminalSize } from './protocol.js';

export interface StdioRequest {
  containerId: string;
  tty: boolean;
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
}

export interface ExecRequest extends StdioRequest {
  cmd: string[];
}

export type AttachRequest = StdioRequest;

export interface PortForwardRequest {
  podSandboxId: string;
  /** Ports named in the rpc; empty = any port the client asks for. */
  ports: number[];
}

/**
 * Emits 'resize' with a TerminalSize each time the client's terminal changes size. `last` keeps the latest
 * one: clients send their size as soon as the streams are up, often before the backend has subscribed.
 */
export class ResizeEvents extends EventEmitter<{ resize: [TerminalSize] }> {
  last: TerminalSize | undefined;

  push(size: TerminalSize): void {
    this.last = size;
    this.emit('resize', size);
  }
}

/** The client's side of a command, whatever the transport. */
export interface CommandIo {
  /** Ends when the client closes its stdin. Absent unless requested. */
  stdin?: Readable;
  stdout?: Writable;
  /** Absent with a tty (stderr is merged into the terminal). */
  stderr?: Writable;
  resize: ResizeEvents;
  /** Aborted when the client goes away: the backend stops the process or detaches. */
  signal: AbortSignal;
}

export interface ExecBackend {
  /** Runs the command to its end and resolves with its exit code; stdout/stderr fully written by then. */
  exec(req: ExecRequest, io: CommandIo): Promise<number>;
}

export interface AttachBackend {
  /** Relays stdio until the container exits or the client detaches (io.signal). Never stops the container. */
  attach(req: AttachRequest, io: CommandIo): Promise<void>;
}

export interface PortForwardBackend {
  /** A TCP connection to `port` inside the pod's network namespace; rejects with a clear message if refused. */
  dial(podSandboxId: string, port: number, signal: AbortSignal): Promise<Duplex>;
}

export interface StreamingBackends {
  exec: ExecBackend;
  attach: AttachBackend;
  portForward: PortForwardBackend;
}
