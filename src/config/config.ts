// skiff's configuration: defaults, then the TOML file, then command-line flags (each wins over the one
// before). Unknown keys and bad values stop start-up with an error naming the key and the file.
import { readFile } from 'node:fs/promises';
import { parse as parseToml } from 'smol-toml';
import { invalidArgument, errnoCode, errorMessage } from '../errors.js';
import { LOG_LEVELS } from '../log.js';
import type { LevelWithSilent } from 'pino';

export const DEFAULT_CONFIG_PATH = '/etc/skiff/config.toml';

export type CgroupDriver = 'cgroupfs' | 'systemd';

export interface RuntimeHandlerConfig {
  name: string;
  /** OCI runtime binary; looked up on PATH when not absolute. */
  path: string;
  /** The OCI runtime's own state dir (its --root). */
  root: string;
  /**
   * Whether the runtime applies mount idmappings. undefined = detect from `<runtime> features`; a runtime
   * without that command (or without idmap in it) is taken as not supporting them.
   */
  idmapMounts?: boolean;
}

export interface SkiffConfig {
  /** Where the config came from (for error messages and `info`). */
  configFile?: string;
  root: string;
  state: string;
  socket: string;
  logLevel: LevelWithSilent;
  cgroupDriver: CgroupDriver;
  /** Parent cgroup for pods when the request names none. */
  cgroupParent: string;
  defaultRuntime: string;
  runtimes: Record<string, RuntimeHandlerConfig>;
  conmonPath: string;
  /** Highest-priority oom_score_adj we may give a container: never below the daemon's own. */
  restrictOomScoreAdj: boolean;
  cni: { confDir: string; binDir: string[]; };
  registry: { configPath: string; mirrors: Record<string, string[]>; insecure: string[]; authFile?: string };
  cdi: { specDirs: string[] };
  streaming: { address: string; port: number; tlsCert?: string; tlsKey?: string; tokenTtlSeconds: number };
}

export interface ConfigFlags {
  config?: string;
  root?: string;
  state?: string;
  socket?: string;
  logLevel?: string;
}

export function defaultConfig(): SkiffConfig {
  return {
    root: '/var/lib/skiff',
    state: '/run/skiff',
    socket: '/run/skiff/skiff.sock',
    logLevel: 'info',
    cgroupDriver: 'cgroupfs',
    cgroupParent: '/skiff',
    defaultRuntime: 'runc',
    runtimes: {},
    conmonPath: 'conmon',
    restrictOomScoreAdj: true,
    cni: { confDir: '/etc/cni/net.d', binDir: ['/usr/lib/cni', '/opt/cni/bin'] },
    registry: { configPath: '/etc/skiff/certs.d', mirrors: {}, insecure: [] },
    cdi: { specDirs: ['/etc/cdi', '/var/run/cdi'] },
    streaming: { address: '127.0.0.1', port: 0, tokenTtlSeconds: 60 },
  };
}

type Table = Record<string, unknown>;

/** Reads one TOML table strictly: every key must be consumed, or start-up fails naming it. */
class TableReader {
  private readonly seen = new Set<string>();
  constructor(
    private readonly table: Table,
    private readonly prefix: string,
    private readonly file: string,
  ) {}

  private fail(key: string, why: string): never {
    throw invalidArgument(`config: ${this.prefix}${key}: ${why}`, { file: this.file });
  }

  private take(key: string): unknown {
    this.seen.add(key);
    return this.table[key];
  }

  string(key: string, fallback: string): string {
    const v = this.take(key);
    if (v === undefined) return fallback;
    if (typeof v !== 'string' || v === '') this.fail(key, `must be a non-empty string, got ${JSON.stringify(v)}`);
    return v;
  }

  optionalString(key: string): string | undefined {
    const v = this.take(key);
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || v === '') this.fail(key, `must be a non-empty string, got ${JSON.stringify(v)}`);
    return v;
  }

  oneOf<T extends string>(key: string, allowed: readonly T[], fallback: T): T {
    const v = this.string(key, fallback);
    if (!(allowed as readonly string[]).includes(v)) this.fail(key, `must be one of ${allowed.join(', ')}, got "${v}"`);
    return v as T;
  }

  bool(key: string, fallback: boolean): boolean;
  bool(key: string, fallback?: boolean): boolean | undefined;
  bool(key: string, fallback?: boolean): boolean | undefined {
    const v = this.take(key);
    if (v === undefined) return fallback;
    if (typeof v !== 'boolean') this.fail(key, `must be true or false, got ${JSON.stringify(v)}`);
    return v;
  }

  int(key: string, fallback: number, min: number, max: number): number {
    const v = this.take(key);
    if (v === undefined) return fallback;
    const n = typeof v === 'bigint' ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max)
      this.fail(key, `must be an integer from ${min} to ${max}, got ${typeof v === "bigint" ? v.toString() : JSON.stringify(v)}`);
    return n;
  }

  strings(key: string, fallback: string[]): string[] {
    const v = this.take(key);
    if (v === undefined) return fallback;
    if (typeof v === 'string') return [v];
    if (!Array.isArray(v) || v.some((s) => typeof s !== 'string'))
      this.fail(key, 'must be a string or an array of strings');
    return v as string[];
  }

  table_(key: string): TableReader {
    const v = this.take(key);
    if (v === undefined) return new TableReader({}, `${this.prefix}${key}.`, this.file);
    if (typeof v !== 'object' || v === null || Array.isArray(v)) this.fail(key, 'must be a table');
    return new TableReader(v as Table, `${this.prefix}${key}.`, this.file);
  }

  /** Entries of a table whose keys are names chosen by the user (runtimes, mirrors). */
  entries(key: string): [string, unknown][] {
    const v = this.take(key);
    if (v === undefined) return [];
    if (typeof v !== 'object' || v === null || Array.isArray(v)) this.fail(key, 'must be a table');
    return Object.entries(v as Table);
  }

  child(name: string, value: unknown): TableReader {
    if (typeof value !== 'object' || value === null || Array.isArray(value))
      throw invalidArgument(`config: ${this.prefix}${name}: must be a table`, { file: this.file });
    return new TableReader(value as Table, `${this.prefix}${name}.`, this.file);
  }

  /** Fails on any key that no reader asked for. */
  done(): void {
    for (const key of Object.keys(this.table)) {
      if (!this.seen.has(key)) this.fail(key, 'unknown key');
    }
  }
}

/** Builds a config from parsed TOML over the defaults. Exported for unit tests. */
export function configFromToml(doc: Table, file: string): SkiffConfig {
  const d = defaultConfig();
  const top = new TableReader(doc, '', file);
  const cfg: SkiffConfig = {
    ...d,
    configFile: file,
    root: top.string('root', d.root),
    state: top.string('state', d.state),
    socket: top.string('socket', d.socket),
    logLevel: top.oneOf('log_level', LOG_LEVELS, d.logLevel),
    cgroupDriver: top.oneOf('cgroup_driver', ['cgroupfs', 'systemd'] as const, d.cgroupDriver),
    cgroupParent: top.string('cgroup_parent', d.cgroupParent),
    defaultRuntime: top.string('default_runtime', d.defaultRuntime),
    conmonPath: top.string('conmon', d.conmonPath),
    restrictOomScoreAdj: top.bool('restrict_oom_score_adj', d.restrictOomScoreAdj),
  };
  cfg.runtimes = {};
  for (const [name, value] of top.entries('runtimes')) {
    if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(name))
      throw invalidArgument(`config: runtimes.${name}: handler names use letters, digits, '_', '.', '-'`, { file });
    const r = top.child(`runtimes.${name}`, value);
    cfg.runtimes[name] = {
      name,
      path: r.string('path', name),
      root: r.string('root', `${cfg.state}/${name}`),
      idmapMounts: r.bool('idmap_mounts'),
    };
    r.done();
  }
  const cni = top.table_('cni');
  cfg.cni = { confDir: cni.string('conf_dir', d.cni.confDir), binDir: cni.strings('bin_dir', d.cni.binDir) };
  cni.done();
  const reg = top.table_('registry');
  cfg.registry = {
    configPath: reg.string('config_path', d.registry.configPath),
    insecure: reg.strings('insecure', []),
    authFile: reg.optionalString('auth_file'),
    mirrors: {},
  };
  for (const [host, list] of reg.entries('mirrors')) {
    if (!Array.isArray(list) || list.some((s) => typeof s !== 'string'))
      throw invalidArgument(`config: registry.mirrors.${host}: must be an array of URLs`, { file });
    cfg.registry.mirrors[host] = list as string[];
  }
  reg.done();
  const cdi = top.table_('cdi');
  cfg.cdi = { specDirs: cdi.strings('spec_dirs', d.cdi.specDirs) };
  cdi.done();
  const st = top.table_('streaming');
  cfg.streaming = {
    address: st.string('address', d.streaming.address),
    port: st.int('port', d.streaming.port, 0, 65535),
    tlsCert: st.optionalString('tls_cert'),
    tlsKey: st.optionalString('tls_key'),
    tokenTtlSeconds: st.int('token_ttl_seconds', d.streaming.tokenTtlSeconds, 1, 3600),
  };
  st.done();
  top.done();
  return finish(cfg);
}

/** Fills in the default handlers and checks cross-field rules. */
function finish(cfg: SkiffConfig): SkiffConfig {
  for (const name of ['runc', 'crun']) {
    cfg.runtimes[name] ??= { name, path: name, root: `${cfg.state}/${name}` };
  }
  if (!cfg.runtimes[cfg.defaultRuntime]) {
    throw invalidArgument(`config: default_runtime: no [runtimes.${cfg.defaultRuntime}] table`, { file: cfg.configFile });
  }
  if ((cfg.streaming.tlsCert === undefined) !== (cfg.streaming.tlsKey === undefined)) {
    throw invalidArgument('config: streaming.tls_cert and streaming.tls_key go together', { file: cfg.configFile });
  }
  return cfg;
}

/**
 * Loads the config: the file (a missing default file is fine, a missing named file is not), then flags.
 * Runtime roots default under the state dir, so a --state flag moves them too.
 */
export async function loadConfig(flags: ConfigFlags = {}): Promise<SkiffConfig> {
  const file = flags.config ?? DEFAULT_CONFIG_PATH;
  let text: string | undefined;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if (!(errnoCode(err) === 'ENOENT' && flags.config === undefined)) {
      throw invalidArgument(`config: cannot read ${file}: ${errorMessage(err)}`, { file });
    }
  }
  let doc: Table = {};
  if (text !== undefined) {
    try {
      doc = parseToml(text);
    } catch (err) {
      throw invalidArgument(`config: ${file} is not valid TOML: ${errorMessage(err)}`, { file });
    }
  }
  // Flags that move the state dir must be applied before defaults derived from it (runtime roots).
  if (flags.state !== undefined) doc = { ...doc, state: flags.state };
  const cfg = configFromToml(doc, text === undefined ? '(defaults)' : file);
  if (flags.root !== undefined) cfg.root = flags.root;
  if (flags.socket !== undefined) cfg.socket = flags.socket;
  else if (flags.state !== undefined && doc.socket === undefined) cfg.socket = `${flags.state}/skiff.sock`;
  if (flags.logLevel !== undefined) {
    if (!(LOG_LEVELS as readonly string[]).includes(flags.logLevel))
      throw invalidArgument(`--log-level: must be one of ${LOG_LEVELS.join(', ')}, got "${flags.logLevel}"`);
    cfg.logLevel = flags.logLevel as LevelWithSilent;
  }
  return cfg;
}
