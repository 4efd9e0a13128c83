import { describe, it, expect } from 'vitest';
import { configFromToml, loadConfig } from '../../src/config/config.js';
import { parse } from 'smol-toml';
import { SkiffError } from '../../src/errors.js';

const load = (text: string) => configFromToml(parse(text), '/etc/skiff/config.toml');

describe('config', () => {
  it('takes the documented shape', () => {
    const c = load(`
root = "/var/lib/skiff"
state = "/run/skiff"
socket = "/run/skiff/skiff.sock"
cgroup_driver = "cgroupfs"
default_runtime = "runc"
[runtimes.runc]
path = "runc"
[runtimes.crun]
path = "crun"
[cni]
conf_dir = "/etc/cni/net.d"
bin_dir = "/usr/lib/cni"
[registry]
config_path = "/etc/skiff/certs.d"
[streaming]
address = "127.0.0.1"
port = 0
`);
    expect(c.runtimes.crun).toMatchObject({ path: 'crun', root: '/run/skiff/crun' });
    expect(c.cni.binDir).toEqual(['/usr/lib/cni']);
    expect(c.streaming.port).toBe(0);
  });

  it('names the unknown key and the file', () => {
    expect(() => load('[streaming]\nprot = 1\n')).toThrow(/streaming\.prot: unknown key/);
    try {
      load('bogus = 1');
    } catch (e) {
      expect(e).toBeInstanceOf(SkiffError);
      expect((e as SkiffError).describe()).toContain('/etc/skiff/config.toml');
    }
  });

  it('rejects bad values', () => {
    expect(() => load('[streaming]\nport = 70000\n')).toThrow(/streaming\.port/);
    expect(() => load('default_runtime = "kata"\n')).toThrow(/runtimes\.kata/);
    expect(() => load('[runtimes.runc]\npath = 3\n')).toThrow(/runtimes\.runc\.path/);
  });

  it('lets flags win over the file, and a missing named file is an error', async () => {
    await expect(loadConfig({ config: '/nonexistent/skiff.toml' })).rejects.toThrow(/cannot read/);
    const c = await loadConfig({ config: '/dev/null', state: '/tmp/st', root: '/tmp/rt' });
    expect(c.socket).toBe('/tmp/st/skiff.sock');
    expect(c.runtimes.runc.root).toBe('/tmp/st/runc');
    expect(c.root).toBe('/tmp/rt');
  });
});
