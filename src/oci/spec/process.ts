// Process steps: what runs (kubelet's command/args rules), its environment and working directory.
import type { OciSpec } from './types.js';
import type { SpecInput } from './input.js';
import { invalidArgument } from '../../errors.js';

/**
 * kubelet's rules: `command` replaces the image's Entrypoint (and drops its Cmd); `args` replace Cmd.
 * Nothing to run at all is an error.
 */
export function commandLine(input: Pick<SpecInput, 'config' | 'image'>): string[] {
  const { config, image } = input;
  const entrypoint = config.command.length > 0 ? config.command : (image.Entrypoint ?? []);
  const cmd = config.args.length > 0 ? config.args : config.command.length > 0 ? [] : (image.Cmd ?? []);
  const argv = [...entrypoint, ...cmd];
  if (argv.length === 0) throw invalidArgument('no command: neither the request nor the image says what to run', { image: config.image?.image });
  return argv;
}

/** Image env, then the request's envs overriding by name, then defaults for PATH/HOME/HOSTNAME. */
export function mergeEnv(input: Pick<SpecInput, 'config' | 'image' | 'user'>, hostname: string | undefined): string[] {
  const env = new Map<string, string>();
  const put = (entry: string) => {
    const eq = entry.indexOf('=');
    const key = eq < 0 ? entry : entry.slice(0, eq);
    if (key !== '') env.set(key, eq < 0 ? '' : entry.slice(eq + 1));
  };
  (input.image.Env ?? []).forEach(put);
  for (const kv of input.config.envs) {
    if (kv.key !== '') env.set(kv.key, kv.value);
  }
  if (!env.has('PATH')) env.set('PATH', '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin');
  if (!env.has('HOME')) env.set('HOME', input.user.home ?? '/');
  if (hostname && !env.has('HOSTNAME')) env.set('HOSTNAME', hostname);
  return [...env].map(([k, v]) => `${k}=${v}`);
}

export function withProcess(spec: OciSpec, input: SpecInput): OciSpec {
  const cwd = input.config.working_dir || input.image.WorkingDir || '/';
  if (!cwd.startsWith('/')) throw invalidArgument(`working_dir must be absolute, got "${cwd}"`, { container: input.containerId });
  return {
    ...spec,
    process: {
      ...spec.process,
      terminal: input.config.tty,
      args: commandLine(input),
      env: mergeEnv(input, input.pod.config.hostname),
      cwd,
      // No rlimits of our own: raising a hard limit needs CAP_SYS_RESOURCE, which we may lack; the
      // container inherits the monitor's.
    },
  };
}

export function withUser(spec: OciSpec, input: SpecInput): OciSpec {
  const { uid, gid, additionalGids } = input.user;
  const gids = [...new Set([gid, ...additionalGids])].filter((g) => g !== gid);
  return { ...spec, process: { ...spec.process, user: gids.length > 0 ? { uid, gid, additionalGids: gids } : { uid, gid } } };
}
