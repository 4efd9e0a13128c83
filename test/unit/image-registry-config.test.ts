// Pure pieces of the registry client: credentials (CRI AuthConfig, docker config.json), WWW-Authenticate
// parsing, hosts.toml endpoint resolution (containerd's certs.d format) and resume offsets.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtemp, mkdir, writeFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { credentialsFromAuthConfig, credentialsFromDockerConfig, parseChallenges, normalizeAuthHost, requestCredentialsFor } from '../../src/image/auth.js';
import { resolveEndpoints } from '../../src/image/hosts.js';
import { bodyStart } from '../../src/image/pull.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'skiff-regcfg-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('credentials', () => {
  it('reads every AuthConfig variant; empty fields mean not given', () => {
    expect(credentialsFromAuthConfig({ username: 'u', password: 'p' })).toEqual({ username: 'u', password: 'p' });
    expect(credentialsFromAuthConfig({ auth: Buffer.from('u:p:with:colons').toString('base64') })).toEqual({ username: 'u', password: 'p:with:colons' });
    expect(credentialsFromAuthConfig({ identity_token: 'r' })).toEqual({ identityToken: 'r' });
    expect(credentialsFromAuthConfig({ registry_token: 't' })).toEqual({ registryToken: 't' });
    expect(credentialsFromAuthConfig({ username: '', password: '', auth: '' })).toBeUndefined();
    expect(credentialsFromAuthConfig(null)).toBeUndefined();
  });

  it('finds docker config.json entries under the keys docker and podman write', async () => {
    const file = join(dir, 'config.json');
    const b64 = (s: string) => Buffer.from(s).toString('base64');
    await writeFile(
      file,
      JSON.stringify({
        auths: {
          'https://index.docker.io/v1/': { auth: b64('hub:pw') },
          'https://reg.example:5000': { username: 'a', password: 'b' },
          'quay.example': { identitytoken: 'refresh' },
        },
      }),
    );
    expect(await credentialsFromDockerConfig(file, 'docker.io')).toEqual({ username: 'hub', password: 'pw' });
    expect(await credentialsFromDockerConfig(file, 'reg.example:5000')).toEqual({ username: 'a', password: 'b' });
    expect(await credentialsFromDockerConfig(file, 'quay.example')).toEqual({ identityToken: 'refresh' });
    expect(await credentialsFromDockerConfig(file, 'other.example')).toBeUndefined();
    expect(await credentialsFromDockerConfig(join(dir, 'missing.json'), 'docker.io')).toBeUndefined();
  });

  it('parses several challenges with quoted and bare parameters', () => {
    expect(parseChallenges('Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push", Basic realm=x')).toEqual([
      { scheme: 'bearer', params: { realm: 'https://auth.example/token', service: 'reg', scope: 'repository:a/b:pull,push' } },
      { scheme: 'basic', params: { realm: 'x' } },
    ]);
  });
});

describe('hosts.toml', () => {
  it('mirrors first, upstream last; _default applies to every registry; loopback is plain HTTP', async () => {
    const certs = join(dir, 'certs.d');
    await mkdir(join(certs, 'docker.io'), { recursive: true });
    await mkdir(join(certs, '_default'), { recursive: true });
    await writeFile(
      join(certs, 'docker.io', 'hosts.toml'),
      'server = "https://registry-1.docker.io"\n[host."http://mirror.local:5000"]\n  capabilities = ["pull"]\n  [host."http://mirror.local:5000".header]\n    x-team = ["a", "b"]\n[host."https://proxy.local/custom/v2"]\n  capabilities = ["pull", "resolve"]\n  override_path = true\n  skip_verify = true\n',
    );
    await writeFile(join(certs, '_default', 'hosts.toml'), '[host."https://everything-mirror.local"]\n');
    const hub = await resolveEndpoints('docker.io', { configPath: certs, mirrors: {}, insecure: [] });
    expect(hub.map((e) => e.base)).toEqual(['http://mirror.local:5000/v2', 'https://proxy.local/custom/v2', 'https://registry-1.docker.io/v2']);
    expect(hub[0].headers).toEqual({ 'x-team': 'a, b' });
    expect([...hub[0].capabilities]).toEqual(['pull']);
    expect(hub[1].skipVerify).toBe(true);
    expect(hub.map((e) => e.isMirror)).toEqual([true, true, false]);
    expect(hub[2].authHost).toBe('docker.io');
    const other = await resolveEndpoints('quay.example', { configPath: certs, mirrors: {}, insecure: [] });
    expect(other.map((e) => e.base)).toEqual(['https://everything-mirror.local/v2', 'https://quay.example/v2']);
    const local = await resolveEndpoints('127.0.0.1:5000', { configPath: join(dir, 'none'), mirrors: {}, insecure: [] });
    expect(local.map((e) => e.base)).toEqual(['http://127.0.0.1:5000/v2']);
    const ins = await resolveEndpoints('reg.lan', { configPath: '', mirrors: { 'reg.lan': ['m.lan'] }, insecure: ['reg.lan'] });
    expect(ins.map((e) => e.base)).toEqual(['https://m.lan/v2', 'http://reg.lan/v2']);
  });
});

describe('resume offsets', () => {
  it('continues only on a 206 whose Content-Range starts where asked', () => {
    expect(bodyStart(200, undefined, 500)).toBe(0);
    expect(bodyStart(206, 'bytes 500-999/1000', 500)).toBe(500);
    expect(bodyStart(206, 'bytes 500-999/*', 500)).toBe(500);
    expect(bodyStart(206, 'bytes 0-999/1000', 500)).toBeUndefined();
    expect(bodyStart(206, undefined, 500)).toBeUndefined();
    expect(bodyStart(206, 'bytes */1000', 500)).toBeUndefined();
  });
});

describe('which host PullImage credentials are for', () => {
  it('normalises server_address as containerd does', () => {
    expect(normalizeAuthHost('https://index.docker.io/v1/')).toBe('docker.io');
    expect(normalizeAuthHost('registry-1.docker.io')).toBe('docker.io');
    expect(normalizeAuthHost('HTTP://Reg.Example:5000/v2/')).toBe('reg.example:5000');
    expect(requestCredentialsFor('docker.io', 'https://index.docker.io/v1/', 'docker.io')).toBe(true);
    expect(requestCredentialsFor('mirror.local:5000', '', 'docker.io')).toBe(false);
    expect(requestCredentialsFor('reg.example', undefined, 'reg.example')).toBe(true);
    expect(requestCredentialsFor('reg.example', 'other.example', 'reg.example')).toBe(false);
  });
});
