import { describe, it, expect } from 'vitest';
import { parseReference, formatReference, isLoopbackHost } from '../../src/image/reference.js';
import { SkiffError } from '../../src/errors.js';

const D = 'sha256:' + 'a'.repeat(64);

describe('image references', () => {
  it.each([
    ['busybox', 'docker.io/library/busybox:latest'],
    ['busybox:1.36', 'docker.io/library/busybox:1.36'],
    ['library/busybox', 'docker.io/library/busybox:latest'],
    ['index.docker.io/foo/bar', 'docker.io/foo/bar:latest'],
    ['user/app:v1', 'docker.io/user/app:v1'],
    ['localhost/app', 'localhost/app:latest'],
    ['localhost:5000/a/b/c:tag', 'localhost:5000/a/b/c:tag'],
    ['127.0.0.1:5000/a:t', '127.0.0.1:5000/a:t'],
    ['[::1]:5000/a:t', '[::1]:5000/a:t'],
    ['quay.io/org/img', 'quay.io/org/img:latest'],
    [`busybox@${D}`, `docker.io/library/busybox@${D}`],
    [`busybox:1.36@${D}`, `docker.io/library/busybox:1.36@${D}`],
    ['a__b/c-d.e_f', 'docker.io/a__b/c-d.e_f:latest'],
  ])('%s -> %s', (input, want) => {
    expect(formatReference(parseReference(input))).toBe(want);
  });

  it.each([
    ['', 'empty'],
    ['Busybox', 'lowercase'],
    ['a//b', 'empty path'],
    ['busybox@sha256:abc', 'digest'],
    ['busybox@md5:' + 'a'.repeat(32), 'digest'],
    ['busybox:', 'tag'],
    ['busybox:-x', 'tag'],
    [':latest', 'no repository'],
    ['host:99999/x', 'out of range'],
    ['a b', 'whitespace'],
    ['x/' + 'a'.repeat(300), 'longer than 255'],
    ['-abc', 'path component'],
  ])('rejects %j (%s)', (input, why) => {
    let err: unknown;
    try {
      parseReference(input);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SkiffError);
    expect((err as SkiffError).kind).toBe('invalid_argument');
    expect((err as SkiffError).message).toContain(why);
  });

  it('treats loopback hosts as plain HTTP candidates', () => {
    expect(isLoopbackHost('localhost:5000')).toBe(true);
    expect(isLoopbackHost('127.0.0.1:5000')).toBe(true);
    expect(isLoopbackHost('127.3.4.5')).toBe(true);
    expect(isLoopbackHost('[::1]:5000')).toBe(true);
    expect(isLoopbackHost('docker.io')).toBe(false);
    expect(isLoopbackHost('127.example.com')).toBe(false);
  });
});
