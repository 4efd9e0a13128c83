// The Kubernetes streaming protocols as names and small pure helpers, shared by the server and the client.
// remotecommand (exec/attach): SPDY versions v1–v4, WebSocket channel.k8s.io … v5.channel.k8s.io.
// portforward: SPDY portforward.k8s.io, WebSocket with two channels per port.

/** HTTP header carrying the SPDY sub-protocol offer and choice. */
export const PROTOCOL_HEADER = 'x-stream-protocol-version';

export const REMOTECOMMAND_V1 = 'channel.k8s.io';
export const REMOTECOMMAND_V2 = 'v2.channel.k8s.io';
export const REMOTECOMMAND_V3 = 'v3.channel.k8s.io';
export const REMOTECOMMAND_V4 = 'v4.channel.k8s.io';
export const REMOTECOMMAND_V5 = 'v5.channel.k8s.io';
/** Over SPDY, in our order of preference (the client's order decides, as in Kubernetes). */
export const SPDY_REMOTECOMMAND_PROTOCOLS = [REMOTECOMMAND_V4, REMOTECOMMAND_V3, REMOTECOMMAND_V2, REMOTECOMMAND_V1];
export const PORTFORWARD_V1 = 'portforward.k8s.io';

/** WebSocket sub-protocols for remotecommand; base64 variants carry text frames. */
export const WS_REMOTECOMMAND_PROTOCOLS = [
  REMOTECOMMAND_V5,
  REMOTECOMMAND_V4,
  `v4.base64.${REMOTECOMMAND_V1}`,
  REMOTECOMMAND_V1,
  `base64.${REMOTECOMMAND_V1}`,
];
/** WebSocket sub-protocols for port-forward (Kubernetes 1.29 offers these). */
export const WS_PORTFORWARD_PROTOCOLS = [REMOTECOMMAND_V4, `v4.base64.${REMOTECOMMAND_V1}`, REMOTECOMMAND_V1, `base64.${REMOTECOMMAND_V1}`];

export function isBase64Protocol(protocol: string): boolean {
  return protocol.includes('base64.');
}

export type StreamType = 'error' | 'stdin' | 'stdout' | 'stderr' | 'resize' | 'data';

/** WebSocket channel numbers for remotecommand. */
export const Channel = { stdin: 0, stdout: 1, stderr: 2, error: 3, resize: 4 } as const;
/** v5: a message on this channel closes the channel named by its next byte (e.g. stdin EOF). */
export const CLOSE_CHANNEL = 255;

/** Picks the first client offer the server supports; '' if the client offered nothing (legacy v1). */
export function negotiate(offered: readonly string[], supported: readonly string[]): string | undefined {
  if (offered.length === 0) return '';
  return offered.find((p) => supported.includes(p));
}

/** Splits a header that may have been repeated (Node joins repeats with ", "). */
export function headerList(value: string | string[] | undefined): string[] {
  const all = Array.isArray(value) ? value : value === undefined ? [] : [value];
  return all.flatMap((v) => v.split(',')).map((v) => v.trim()).filter((v) => v !== '');
}

export interface TerminalSize {
  width: number;
  height: number;
}

/**
 * The outcome of an exec, as a v1 Status object (what v4/v5 clients decode from the error stream):
 * success, or a NonZeroExitCode failure whose cause carries the code.
 */
export function exitStatus(exitCode: number): Record<string, unknown> {
  if (exitCode === 0) return { metadata: {}, status: 'Success' };
  return {
    metadata: {},
    status: 'Failure',
    message: `command terminated with non-zero exit code: exit status ${exitCode}`,
    reason: 'NonZeroExitCode',
    details: { causes: [{ reason: 'ExitCode', message: String(exitCode) }] },
  };
}

/** An error that stopped the command from running (not an exit code). */
export function errorStatus(message: string): Record<string, unknown> {
  return { metadata: {}, status: 'Failure', message, reason: 'InternalError', code: 500 };
}

/**
 * Reads what a client decoded from the error stream: undefined = success, a number = exit code, a string =
 * an error message (v1–v3 send plain text; v4+ a Status).
 */
export function parseErrorStream(text: string, statusJson: boolean): { exitCode?: number; message?: string } {
  if (text.trim() === '') return { exitCode: 0 };
  if (!statusJson) return { message: text.trim() };
  let status: { status?: string; message?: string; reason?: string; details?: { causes?: { reason?: string; message?: string }[] } };
  try {
    status = JSON.parse(text) as typeof status;
  } catch {
    return { message: text.trim() };
  }
  if (status.status === 'Success') return { exitCode: 0 };
  if (status.reason === 'NonZeroExitCode') {
    const cause = status.details?.causes?.find((c) => c.reason === 'ExitCode');
    const code = Number(cause?.message);
    if (Number.isInteger(code)) return { exitCode: code };
  }
  return { message: status.message ?? text.trim() };
}

/**
 * Resize messages are JSON objects written back to back ({"Width":80,"Height":24}), as Go's json.Encoder
 * writes them. Feed bytes, get complete sizes.
 */
export class ResizeDecoder {
  private buf = '';

  push(chunk: Buffer | string): TerminalSize[] {
    this.buf += chunk.toString();
    const out: TerminalSize[] = [];
    for (;;) {
      const end = endOfFirstObject(this.buf);
      if (end < 0) break;
      const text = this.buf.slice(this.buf.indexOf('{'), end + 1);
      this.buf = this.buf.slice(end + 1);
      try {
        const v = JSON.parse(text) as { Width?: unknown; Height?: unknown };
        const width = Number(v.Width);
        const height = Number(v.Height);
        if (Number.isInteger(width) && Number.isInteger(height) && width >= 0 && height >= 0 && width < 65536 && height < 65536)
          out.push({ width, height });
      } catch {
        // A malformed size is dropped; the terminal keeps its last size.
      }
    }
    // Bound memory if a client sends garbage with no closing brace.
    if (this.buf.length > 4096) this.buf = '';
    return out;
  }
}

function endOfFirstObject(s: string): number {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === '{') depth++;
    else if (c === '}' && depth > 0 && --depth === 0) return i;
  }
  return -1;
}

export function encodeResize(size: TerminalSize): string {
  return `${JSON.stringify({ Width: size.width, Height: size.height })}\n`;
}
