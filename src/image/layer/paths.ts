// Paths inside a layer being applied: relative names ("a/b"), which of them are known real directories,
// and file-system calls that answer a question instead of throwing.
import { lstatSync, rmdirSync, type Stats } from 'node:fs';
import { errnoCode } from '../../errors.js';

/**
 * Directories of the layer known to be real directories created or checked by us (relative paths), indexed
 * by parent so that forgetting a replaced directory's subtree costs that subtree, not every known directory.
 */
export class SafeDirs {
  private readonly children = new Map<string, Set<string>>();
  private readonly known = new Set<string>(['']);

  has(rel: string): boolean {
    return this.known.has(rel);
  }

  add(rel: string): void {
    if (this.known.has(rel)) return;
    this.known.add(rel);
    const parent = parentOf(rel);
    let siblings = this.children.get(parent);
    if (!siblings) this.children.set(parent, (siblings = new Set()));
    siblings.add(rel);
  }

  /** Forgets rel and everything known below it. */
  removeTree(rel: string): void {
    this.children.get(parentOf(rel))?.delete(rel);
    const stack = [rel];
    for (let d = stack.pop(); d !== undefined; d = stack.pop()) {
      this.known.delete(d);
      const below = this.children.get(d);
      if (below) {
        // one by one: spreading a huge directory's children as arguments overflows the stack
        for (const child of below) stack.push(child);
        this.children.delete(d);
      }
    }
  }
}

export function parentOf(rel: string): string {
  const i = rel.lastIndexOf('/');
  return i < 0 ? '' : rel.slice(0, i);
}

/** Removes an empty directory; false when it is not empty. */
export function tryRemoveEmptyDir(path: string): boolean {
  try {
    rmdirSync(path);
    return true;
  } catch (err) {
    if (errnoCode(err) === 'ENOTEMPTY' || errnoCode(err) === 'EEXIST') return false;
    throw err;
  }
}

/** Runs a create call; false when something already exists at the path (EEXIST), other errors thrown. */
export function tryCreate(create: () => void): boolean {
  try {
    create();
    return true;
  } catch (err) {
    if (errnoCode(err) === 'EEXIST') return false;
    throw err;
  }
}

export function lstatOrUndefined(path: string): Stats | undefined {
  try {
    // no exception for the common "not there yet": building one per entry showed in profiles
    return lstatSync(path, { throwIfNoEntry: false });
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return undefined;
    throw err;
  }
}

/**
 * Folds `step` over rel's ancestors from the root down to rel, remembering each directory's result in `memo`:
 * the nearest ancestor already seen decides for those below it, so each directory is looked at once and
 * thousands of operations deep down a tree cost no more than near its root.
 */
export function foldAncestors<T>(rel: string, memo: Map<string, T>, atRoot: T, step: (above: T, dir: string) => T): T {
  const unknown: string[] = [];
  let cur = rel;
  let known: T | undefined;
  while (cur !== '' && (known = memo.get(cur)) === undefined) {
    unknown.push(cur);
    cur = parentOf(cur);
  }
  let acc = cur === '' || known === undefined ? atRoot : known;
  for (let i = unknown.length - 1; i >= 0; i--) {
    acc = step(acc, unknown[i]);
    memo.set(unknown[i], acc);
  }
  return acc;
}
