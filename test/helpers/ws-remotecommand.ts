// A WebSocket client for the Kubernetes streaming protocols, written from the protocol description (not
// from our server code), as client-go's websocket executor speaks them: remotecommand over
// v5.channel.k8s.io (or v4) and port-forward over v4.channel.k8s.io.
import { WebSocket } from 'ws';

function wsUrl(url: string): string {
  return url.replace(/^http/, 'ws');
}

export interface WsOutcome {
  stdout: Buffer;
  stderr: Buffer;
  /** The decoded Status on the error channel (undefined if none came). */
  status?: { status?: string; message?: string; reason?: string; details?: { causes?: { reason?: string; message?: string }[] } };
  exitCode?: number;
  closeCode: number;
}

/** One exec/attach session. Write stdin, watch output, await `done`. */
export class WsRemoteCommand {
  readonly ws: WebSocket;
  readonly opened: Promise<void>;
  readonly done: Promise<WsOutcome>;
  private readonly out: Buffer[] = [];
  private readonly err: Buffer[] = [];
  private errorText = '';
  private listeners: (() => void)[] = [];

  constructor(url: string, protocols: string[] = ['v5.channel.k8s.io']) {
    this.ws = new WebSocket(wsUrl(url), protocols);
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', () => resolve());
      this.ws.once('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => reject(new Error(`HTTP ${res.statusCode}: ${body.trim()}`)));
      });
      this.ws.once('error', reject);
    });
    this.opened.catch(() => undefined);
    this.ws.on('message', (raw: Buffer) => {
      if (raw.length === 0) return;
      const data = raw.subarray(1);
      if (raw[0] === 1) this.out.push(data);
      else if (raw[0] === 2) this.err.push(data);
      else if (raw[0] === 3) this.errorText += data.toString();
      for (const l of this.listeners.splice(0)) l();
    });
    this.done = new Promise((resolve, reject) => {
      this.ws.once('close', (code) => {
        let status: WsOutcome['status'];
        let exitCode: number | undefined;
        if (this.errorText !== '') {
          status = JSON.parse(this.errorText) as WsOutcome['status'];
          if (status?.status === 'Success') exitCode = 0;
          const cause = status?.details?.causes?.find((c) => c.reason === 'ExitCode');
          if (cause) exitCode = Number(cause.message);
        }
        resolve({ stdout: Buffer.concat(this.out), stderr: Buffer.concat(this.err), status, exitCode, closeCode: code });
      });
      this.opened.catch(reject);
    });
    this.done.catch(() => undefined);
  }

  get stdoutText(): string {
    return Buffer.concat(this.out).toString();
  }

  write(data: Buffer | string): void {
    this.ws.send(Buffer.concat([Buffer.from([0]), Buffer.from(data)]));
  }

  /** v5: tell the server stdin is finished. */
  closeStdin(): void {
    this.ws.send(Buffer.from([255, 0]));
  }

  resize(width: number, height: number): void {
    this.ws.send(Buffer.concat([Buffer.from([4]), Buffer.from(JSON.stringify({ Width: width, Height: height }))]));
  }

  /** Resolves once stdout contains `text` (or rejects after `ms`). */
  async waitForOutput(text: string | RegExp, ms = 10_000): Promise<void> {
    const deadline = Date.now() + ms;
    const has = (): boolean => (typeof text === 'string' ? this.stdoutText.includes(text) : text.test(this.stdoutText));
    while (!has()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${String(text)}; got ${JSON.stringify(this.stdoutText)}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 200);
        this.listeners.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }
}
