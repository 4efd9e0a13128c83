// Docker Registry HTTP API v2 / OCI distribution client on undici. One instance per pull: it knows the
// repository, the endpoints to try (mirrors first) and the credentials. It
//  - authenticates on demand (401 -> WWW-Authenticate: Basic, or Bearer via the token realm; tokens cached
//    per host+scope until expires_in),
//  - follows redirects itself, dropping Authorization on a cross-origin hop (blob storage behind a 307)
//    and answering that host's own 401 challenge if it sends one,
//  - retries 5xx, 429 and connection errors with backoff, then moves on to the next endpoint,
//  - never treats a missing Content-Length as 0: the stream is verified by digest and size instead.
import { Agent, request, type Dispatcher } from 'undici';
import { readFileSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { notFound, permissionDenied, unavailable, invalidArgument, SkiffError, errorMessage, type ErrorContext } from '../errors.js';
import type { RegistryEndpoint } from './hosts.js';
import { parseChallenges, basicHeader, type Credentials, type Challenge } from './auth.js';
import { baselineWasmOnly } from '../util/gc.js';

baselineWasmOnly();

const MAX_REDIRECTS = 5;
const ATTEMPTS = 3;
const BACKOFF_MS = [200, 800];
export const MAX_MANIFEST_BYTES = 8 * 1024 * 1024;

interface CachedToken {
  token: string;
  expiresAt: number;
}

/** Tokens and agents shared by all pulls of a daemon: a challenge is answered once per host+scope. */
export class RegistrySession {
  private readonly tokens = new Map<string, CachedToken>();
  private readonly agents = new Map<string, Agent>();
  /** The last Bearer challenge each host sent: later requests there fetch a token first, without a 401. */
  private readonly challenges = new Map<string, Challenge>();

  challenge(host: string): Challenge | undefined {
    return this.challenges.get(host);
  }

  /** Drops a remembered challenge (unless another request has replaced it meanwhile). */
  forgetChallenge(host: string, c: Challenge): void {
    if (this.challenges.get(host) === c) this.challenges.delete(host);
  }

  saveChallenge(host: string, c: Challenge): void {
    // the scope named belongs to the request that was refused; each later request names its own
    const params = { ...c.params };
    delete params.scope;
    this.challenges.set(host, { scheme: c.scheme, params });
  }

  agent(ep: Pick<RegistryEndpoint, 'skipVerify' | 'ca'>): Agent {
    const key = `${ep.skipVerify}|${ep.ca.join(',')}`;
    let a = this.agents.get(key);
    if (!a) {
      a = new Agent({
        connect: { timeout: 15_000, rejectUnauthorized: !ep.skipVerify, ca: ep.ca.length ? ep.ca.map((f) => readFileSync(f)) : undefined },
        headersTimeout: 60_000,
        bodyTimeout: 60_000,
        connections: 16,
      });
      this.agents.set(key, a);
    }
    return a;
  }

  token(key: string): string | undefined {
    const t = this.tokens.get(key);
    if (t && t.expiresAt > Date.now()) return t.token;
    this.tokens.delete(key);
    return undefined;
  }

  saveToken(key: string, token: string, expiresInSec: number | undefined): void {
    // some slack so a token never expires in flight; 60 s is the spec's default lifetime
    const life = expiresInSec !== undefined && expiresInSec > 0 ? expiresInSec : 60;
    const ttl = life > 10 ? life - 5 : life / 2;
    this.tokens.set(key, { token, expiresAt: Date.now() + ttl * 1000 });
  }

  async close(): Promise<void> {
    await Promise.all([...this.agents.values()].map((a) => a.close()));
    this.agents.clear();
  }
}

export interface RegistryResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Readable;
  url: string;
}

export interface FetchOptions {
  accept?: string[];
  method?: 'GET' | 'HEAD';
  /** Ask for the bytes from this offset on (resuming a blob download). */
  rangeFrom?: number;
}

/** 416: the registry will not serve the range asked for; the download has to start over. */
export class RangeNotSatisfiableError extends SkiffError {
  constructor(message: string) {
    super('unavailable', message);
  }
}

/** An HTTP status the API does not answer with: the registry is at fault (UNAVAILABLE), but a retry will not help. */
export class UnexpectedStatusError extends SkiffError {
  constructor(message: string, context: ErrorContext) {
    super('unavailable', message, context);
  }
}

function header(h: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

function isRetryable(err: unknown): boolean {
  if (err instanceof RangeNotSatisfiableError || err instanceof UnexpectedStatusError) return false;
  return !(err instanceof SkiffError) || err.kind === 'unavailable';
}

/** What is read of an error or redirect body (for the message): a registry may send an endless one. */
const MAX_ERROR_BODY = 64 * 1024;
/** A token server's JSON answer: a token is a few KiB at most. */
const MAX_TOKEN_BODY = 1024 * 1024;

/** Reads at most MAX_ERROR_BODY bytes of a body we do not need, then drops the rest with the connection. */
async function drain(body: Dispatcher.ResponseData['body']): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  try {
    for await (const c of body) {
      const b = c as Buffer;
      chunks.push(b);
      n += b.length;
      if (n >= MAX_ERROR_BODY) break;
    }
  } catch {
    // the text is only for the message
  } finally {
    body.destroy();
  }
  return Buffer.concat(chunks).subarray(0, MAX_ERROR_BODY).toString('utf8').slice(0, 500);
}

export class RegistryClient {
  constructor(
    private readonly session: RegistrySession,
    readonly registry: string,
    readonly repository: string,
    readonly endpoints: RegistryEndpoint[],
    private readonly credentials: (host: string) => Promise<Credentials | undefined>,
    /** The pull's caller gave up: requests in flight are aborted and none is retried or started. */
    private readonly signal?: AbortSignal,
  ) {}

  /**
   * GET (or HEAD) `/<repo>/<kind>/<ref>` from the first endpoint that answers; 404 on one endpoint moves to
   * the next, and NOT_FOUND is thrown only when every endpoint said so.
   */
  async fetch(kind: 'manifests' | 'blobs', ref: string, opts: FetchOptions = {}): Promise<RegistryResponse> {
    return this.fetchAny(kind, ref, opts, async (res) => res);
  }

  /**
   * As fetch, with the whole body read (a manifest): a body cut short or stalled is a failed request, retried
   * and then tried on the next endpoint, as a blob download is; one over `limit` bytes is refused.
   */
  async fetchWhole(kind: 'manifests' | 'blobs', ref: string, opts: FetchOptions, limit: number, what: string): Promise<{ data: Buffer; headers: RegistryResponse['headers'] }> {
    return this.fetchAny(kind, ref, opts, async (res) => {
      try {
        return { data: await readLimited(res.body, limit, what), headers: res.headers };
      } catch (err) {
        if (err instanceof SkiffError) throw err;
        throw unavailable(`${this.registry}: reading the ${what} from ${new URL(res.url).host} failed: ${errorMessage(err)}`, { image: this.repository }, err);
      }
    });
  }

  private async fetchAny<T>(kind: 'manifests' | 'blobs', ref: string, opts: FetchOptions, consume: (res: RegistryResponse) => Promise<T>): Promise<T> {
    let lastErr: unknown;
    for (const ep of this.endpointsFor(kind)) {
      try {
        return await this.fetchFrom(ep, this.url(ep, kind, ref), opts, consume);
      } catch (err) {
        lastErr = err;
      }
    }
    throw lastErr instanceof Error ? lastErr : unavailable(`no endpoint for ${this.registry}`);
  }

  /** Endpoints able to serve `kind`, mirrors first; the upstream is always last. */
  endpointsFor(kind: 'manifests' | 'blobs'): RegistryEndpoint[] {
    const wanted = kind === 'manifests' ? 'resolve' : 'pull';
    return this.endpoints.filter((e) => e.capabilities.has(wanted) || !e.isMirror);
  }

  url(ep: RegistryEndpoint, kind: 'manifests' | 'blobs', ref: string): string {
    return `${ep.base}/${this.repository}/${kind}/${ref}`;
  }

  /** Tries one endpoint with retries for transient failures (of the request, or of `consume` reading its answer). */
  async fetchFrom(ep: RegistryEndpoint, url: string, opts: FetchOptions): Promise<RegistryResponse>;
  async fetchFrom<T>(ep: RegistryEndpoint, url: string, opts: FetchOptions, consume: (res: RegistryResponse) => Promise<T>): Promise<T>;
  async fetchFrom<T>(ep: RegistryEndpoint, url: string, opts: FetchOptions, consume?: (res: RegistryResponse) => Promise<T>): Promise<T | RegistryResponse> {
    let lastErr: unknown;
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      if (attempt > 0) await new Promise((r) => setTimeout(r, BACKOFF_MS[attempt - 1] ?? 1000));
      this.signal?.throwIfAborted();
      try {
        const res = await this.follow(ep, url, opts);
        return consume ? await consume(res) : res;
      } catch (err) {
        this.signal?.throwIfAborted();
        lastErr = err;
        if (!isRetryable(err)) throw err;
      }
    }
    throw lastErr instanceof Error ? lastErr : unavailable(String(lastErr));
  }

  /** One logical request: auth challenges and redirects handled here. */
  private async follow(ep: RegistryEndpoint, startUrl: string, opts: FetchOptions): Promise<RegistryResponse> {
    let url = startUrl;
    const origin = new URL(startUrl).origin;
    let authTried = new Set<string>();
    for (let hop = 0; hop <= MAX_REDIRECTS + 2; hop++) {
      const sameOrigin = new URL(url).origin === origin;
      const headers: Record<string, string> = { 'user-agent': 'skiff' };
      if (sameOrigin) Object.assign(headers, ep.headers);
      if (opts.accept) headers.accept = opts.accept.join(', ');
      if (opts.rangeFrom) headers.range = `bytes=${opts.rangeFrom}-`;
      let auth = await this.authorizationFor(url, sameOrigin, ep);
      const known = auth ? undefined : this.session.challenge(new URL(url).host);
      if (known && !authTried.has(new URL(url).host)) {
        // this host wants Bearer tokens (it said so before): get one for this scope up front
        authTried.add(new URL(url).host);
        try {
          await this.answerChallenge(url, [known], sameOrigin, ep);
          auth = await this.authorizationFor(url, sameOrigin, ep);
        } catch (err) {
          this.signal?.throwIfAborted();
          // a token server that cannot be reached may be stale (the registry moved it): forget it and let the
          // registry challenge this request afresh. A refusal of the credentials stands: asking again would
          // only repeat a failed login.
          if (!(err instanceof SkiffError) || err.kind !== 'unavailable') throw err;
          this.session.forgetChallenge(new URL(url).host, known);
          authTried.delete(new URL(url).host);
        }
      }
      if (auth) headers.authorization = auth;
      let res: Dispatcher.ResponseData;
      try {
        res = await request(url, { method: opts.method ?? 'GET', headers, dispatcher: this.session.agent(ep), signal: this.signal });
      } catch (err) {
        throw unavailable(`${this.registry}: request to ${new URL(url).host} failed: ${errorMessage(err)}`, { image: this.repository }, err);
      }
      const status = res.statusCode;
      if (status >= 200 && status < 300) {
        return { status, headers: res.headers, body: res.body, url };
      }
      if ([301, 302, 303, 307, 308].includes(status)) {
        const loc = header(res.headers, 'location');
        await drain(res.body);
        if (!loc) throw unavailable(`${this.registry}: redirect ${status} without a Location`);
        if (hop >= MAX_REDIRECTS) throw unavailable(`${this.registry}: too many redirects`);
        url = new URL(loc, url).toString();
        authTried = new Set();
        continue;
      }
      if (status === 401) {
        const challenges = parseChallenges(res.headers['www-authenticate']);
        const text = await drain(res.body);
        const key = new URL(url).host;
        const bearer = challenges.find((c) => c.scheme === 'bearer');
        if (bearer) this.session.saveChallenge(key, bearer);
        if (authTried.has(key) || challenges.length === 0) {
          throw permissionDenied(`${this.registry}: unauthorized to pull ${this.repository}${text ? `: ${text.trim()}` : ''}`, { image: this.repository });
        }
        authTried.add(key);
        await this.answerChallenge(url, challenges, sameOrigin, ep);
        continue;
      }
      const text = await drain(res.body);
      if (status === 416) throw new RangeNotSatisfiableError(`${this.registry}: HTTP 416 for a resumed download from ${new URL(url).host}`);
      if (status === 404) throw notFound(`${this.registry}/${this.repository}: ${new URL(url).pathname.split('/').slice(-2).join(' ')} not found`, { image: this.repository });
      if (status === 403) throw permissionDenied(`${this.registry}: access to ${this.repository} denied: ${text.trim()}`, { image: this.repository });
      if (status >= 500 || status === 429 || status === 408) throw unavailable(`${this.registry}: HTTP ${status} from ${new URL(url).host}`, { image: this.repository });
      throw new UnexpectedStatusError(`${this.registry}: HTTP ${status} for ${new URL(url).pathname}: ${text.trim()}`, { image: this.repository });
    }
    throw unavailable(`${this.registry}: too many authentication rounds`);
  }

  private scope(): string {
    return `repository:${this.repository}:pull`;
  }

  private tokenKey(url: string): string {
    return `${new URL(url).host}|${this.scope()}`;
  }

  private basicKey(url: string): string {
    return `${new URL(url).host}|basic`;
  }

  private async authorizationFor(url: string, sameOrigin: boolean, ep: RegistryEndpoint): Promise<string | undefined> {
    const bearer = this.session.token(this.tokenKey(url));
    if (bearer) return `Bearer ${bearer}`;
    if (this.session.token(this.basicKey(url)) && sameOrigin) {
      const c = await this.credentials(ep.authHost);
      if (c) return basicHeader(c);
    }
    return undefined;
  }

  private async answerChallenge(url: string, challenges: ReturnType<typeof parseChallenges>, sameOrigin: boolean, ep: RegistryEndpoint): Promise<void> {
    // Credentials go only to the registry's own origin (and its token realm); a redirected host gets none.
    const creds = sameOrigin ? await this.credentials(ep.authHost) : undefined;
    const bearer = challenges.find((c) => c.scheme === 'bearer');
    if (bearer) {
      if (creds?.registryToken) {
        this.session.saveToken(this.tokenKey(url), creds.registryToken, 3600);
        return;
      }
      const realm = bearer.params.realm;
      if (!realm) throw permissionDenied(`${this.registry}: Bearer challenge without a realm`);
      const { token, expiresIn } = await this.fetchToken(realm, bearer.params.service, bearer.params.scope ?? this.scope(), creds, ep);
      this.session.saveToken(this.tokenKey(url), token, expiresIn);
      return;
    }
    if (challenges.some((c) => c.scheme === 'basic')) {
      if (!creds || creds.username === undefined) throw permissionDenied(`${this.registry}: credentials required to pull ${this.repository}`, { image: this.repository });
      this.session.saveToken(this.basicKey(url), 'basic', 3600);
      return;
    }
    throw permissionDenied(`${this.registry}: unsupported authentication scheme ${challenges.map((c) => c.scheme).join(', ')}`);
  }

  private async fetchToken(realm: string, service: string | undefined, scope: string, creds: Credentials | undefined, ep: RegistryEndpoint): Promise<{ token: string; expiresIn?: number }> {
    let res: Dispatcher.ResponseData;
    try {
      if (creds?.identityToken) {
        // OAuth2 refresh-token grant, as docker does for identity tokens
        const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: creds.identityToken, client_id: 'skiff', scope });
        if (service) form.set('service', service);
        res = await request(realm, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form.toString(), dispatcher: this.session.agent(ep) });
      } else {
        const u = new URL(realm);
        if (service) u.searchParams.set('service', service);
        u.searchParams.set('scope', scope);
        const headers: Record<string, string> = { 'user-agent': 'skiff' };
        const basic = creds ? basicHeader(creds) : undefined;
        if (basic) headers.authorization = basic;
        res = await request(u, { headers, dispatcher: this.session.agent(ep) });
      }
    } catch (err) {
      throw unavailable(`${this.registry}: token server ${new URL(realm).host} unreachable: ${errorMessage(err)}`, {}, err);
    }
    if (res.statusCode !== 200) await drain(res.body);
    if (res.statusCode === 401 || res.statusCode === 403) throw permissionDenied(`${this.registry}: token server refused the credentials (HTTP ${res.statusCode})`, { image: this.repository });
    if (res.statusCode >= 500) throw unavailable(`${this.registry}: token server answered HTTP ${res.statusCode}`);
    if (res.statusCode !== 200) throw permissionDenied(`${this.registry}: token server answered HTTP ${res.statusCode}`);
    let text: string;
    try {
      text = (await readLimited(res.body, MAX_TOKEN_BODY, 'its answer')).toString('utf8');
    } catch (err) {
      throw unavailable(`${this.registry}: token server ${new URL(realm).host}: ${errorMessage(err)}`, {}, err);
    }
    let doc: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      doc = JSON.parse(text) as typeof doc;
    } catch {
      throw unavailable(`${this.registry}: token server answered something that is not JSON`);
    }
    const token = typeof doc.token === 'string' && doc.token ? doc.token : typeof doc.access_token === 'string' ? doc.access_token : '';
    if (!token) throw permissionDenied(`${this.registry}: token server gave no token`);
    return { token, expiresIn: typeof doc.expires_in === 'number' ? doc.expires_in : undefined };
  }
}

/** Reads a whole (small) body, refusing more than `limit` bytes. */
export async function readLimited(body: Readable, limit: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of body) {
    const b = c as Buffer;
    n += b.length;
    if (n > limit) {
      body.destroy();
      throw invalidArgument(`${what} is larger than ${limit} bytes`);
    }
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}
