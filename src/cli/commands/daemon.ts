// `skiff daemon`: flags win over the config file, the file over defaults.
import type { Command } from 'commander';

interface DaemonFlags {
  config?: string;
  root?: string;
  state?: string;
  socket?: string;
  logLevel?: string;
}

export function registerDaemon(program: Command): void {
  program
    .command('daemon')
    .description('Serve the CRI on a unix socket')
    .option('--config <file>', 'config file (default /etc/skiff/config.toml)')
    .option('--root <dir>', 'persistent data dir (default /var/lib/skiff)')
    .option('--state <dir>', 'runtime state dir (default /run/skiff)')
    .option('--socket <path>', 'CRI socket (default /run/skiff/skiff.sock)')
    .option('--log-level <level>', 'trace, debug, info, warn, error, fatal, silent')
    .action(async (flags: DaemonFlags) => {
      // loaded here, not at the top: every client verb would otherwise load the whole daemon first
      const [{ loadConfig }, { startDaemon }] = await Promise.all([import('../../config/config.js'), import('../../daemon/daemon.js')]);
      const config = await loadConfig(flags);
      const daemon = await startDaemon(config);
      await new Promise<void>((resolve) => {
        const stop = (signal: NodeJS.Signals) => {
          void daemon.shutdown(signal).then(resolve);
        };
        process.once('SIGTERM', stop);
        process.once('SIGINT', stop);
      });
    });
}
