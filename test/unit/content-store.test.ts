// The content store's sharing of one download between callers, and what a caller's cancel does to it.
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { mkdtemp, rm, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { createHash } from 'node:crypto';
import { ContentStore, type Ingest } from '../../src/image/content-store.js';
import { cancelled } from '../../src/errors.js';

let dir: string;
let store: ContentStore;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'skiff-content-'));
  store = new ContentStore(dir);
  await store.init();
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const data = Buffer.from('the blob');
const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
const fillWithData = async (ing: Ingest) => ing.append(Readable.from([data]), 0);

describe('ContentStore.ensure', () => {
  it('callers of the same digest share one download', async () => {
    let fills = 0;
    const fill = async (ing: Ingest) => {
      fills++;
      await new Promise((r) => setTimeout(r, 20));
      await fillWithData(ing);
    };
    await Promise.all([store.ensure(digest, data.length, fill), store.ensure(digest, data.length, fill), store.ensure(digest, data.length, fill)]);
    expect(fills).toBe(1);
    expect(await readFile(store.path(digest))).toEqual(data);
  });

  it("a waiter downloads the blob itself when the download's own caller cancels", async () => {
    const owner = new AbortController();
    let ownerStarted!: () => void;
    const started = new Promise<void>((r) => (ownerStarted = r));
    const ownerFill = async () => {
      ownerStarted();
      await new Promise<void>((_r, reject) => owner.signal.addEventListener('abort', () => reject(owner.signal.reason as Error)));
    };
    const first = store.ensure(digest, data.length, ownerFill, undefined, undefined, owner.signal);
    await started;
    let waiterFills = 0;
    const second = store.ensure(digest, data.length, async (ing) => {
      waiterFills++;
      await fillWithData(ing);
    });
    owner.abort(cancelled('the client went away'));
    await expect(first).rejects.toMatchObject({ kind: 'cancelled' });
    await second;
    expect(waiterFills).toBe(1);
    expect(await readFile(store.path(digest))).toEqual(data);
  });

  it('a waiter that cancels stops waiting at once; the download goes on for the others', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const first = store.ensure(digest, data.length, async (ing) => {
      await gate;
      await fillWithData(ing);
    });
    const waiter = new AbortController();
    const second = store.ensure(digest, data.length, fillWithData, undefined, undefined, waiter.signal);
    waiter.abort(cancelled('gave up'));
    await expect(second).rejects.toMatchObject({ kind: 'cancelled' });
    release();
    await first;
    expect(await readFile(store.path(digest))).toEqual(data);
  });
});
