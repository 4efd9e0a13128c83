// Single-use, expiring tokens for streaming URLs: an Exec/Attach/PortForward rpc stores its request under a
// random token and returns a URL naming it; the first HTTP request with the token takes the request out.
// A URL is useless after its first use or its TTL, so nobody can attach without having called the rpc.
import { randomBytes } from 'node:crypto';
import { resourceExhausted } from '../errors.js';

/** Outstanding tokens are bounded so a client can't grow the daemon's memory by calling Exec in a loop. */
export const MAX_PENDING_TOKENS = 1000;

export class TokenCache<T> {
  private readonly entries = new Map<string, { value: T; expiresAt: number }>();

  constructor(
    private readonly ttlMs: number,
    private readonly now: () => number = Date.now,
    private readonly capacity = MAX_PENDING_TOKENS,
  ) {}

  insert(value: T): string {
    this.sweep();
    if (this.entries.size >= this.capacity) {
      throw resourceExhausted(`too many streaming requests waiting to be used (${this.capacity})`);
    }
    const token = randomBytes(18).toString('base64url');
    this.entries.set(token, { value, expiresAt: this.now() + this.ttlMs });
    return token;
  }

  /** The stored value, once: later calls, and calls after the TTL, get undefined. */
  consume(token: string): T | undefined {
    const entry = this.entries.get(token);
    if (!entry) return undefined;
    this.entries.delete(token);
    return entry.expiresAt > this.now() ? entry.value : undefined;
  }

  get size(): number {
    return this.entries.size;
  }

  private sweep(): void {
    const now = this.now();
    for (const [token, entry] of this.entries) if (entry.expiresAt <= now) this.entries.delete(token);
  }
}
