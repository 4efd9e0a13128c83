// What every client verb needs: a connection made from the global flags, and output helpers.
import type { Command } from 'commander';
import { connect, DEFAULT_ENDPOINT, type CriClient } from './client.js';
import { formatStructured, type OutputFormat } from './output.js';

export interface GlobalOptions {
  runtimeEndpoint?: string;
  imageEndpoint?: string;
  timeout: string;
  debug?: boolean;
}

/** crictl-style durations: "2s", "500ms", "1m", or a bare number of seconds. 0 = no timeout. */
export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) throw new Error(`invalid duration "${text}" (examples: 2s, 500ms, 1m)`);
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  return Math.round(n * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[unit]!);
}

export class CliContext {
  private client_?: CriClient;
  /** A verb that passes on a status of its own (exec: the command's exit code) sets this. */
  exitCode = 0;
  constructor(private readonly program: Command) {}

  get options(): GlobalOptions {
    return this.program.opts<GlobalOptions>();
  }

  endpoint(): string {
    return this.options.runtimeEndpoint ?? process.env.CONTAINER_RUNTIME_ENDPOINT ?? DEFAULT_ENDPOINT;
  }

  /** The -t timeout if the user gave one, else 0: for calls that take long by nature (a pull). */
  explicitTimeoutMs(): number {
    return this.program.getOptionValueSource('timeout') === 'cli' ? parseDuration(this.options.timeout) : 0;
  }

  client(): CriClient {
    this.client_ ??= connect(this.endpoint(), parseDuration(this.options.timeout));
    return this.client_;
  }

  close(): void {
    this.client_?.close();
  }

  print(text: string): void {
    process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  }

  /** Prints a response as JSON/YAML, or calls `table` for the human format. */
  output(format: OutputFormat, value: unknown, table: () => string): void {
    this.print(format === 'table' ? table() : formatStructured(value, format));
  }
}

export const OUTPUT_FORMATS: OutputFormat[] = ['table', 'json', 'yaml'];

export function outputOption(defaultFormat: OutputFormat = 'table'): [string, string, OutputFormat] {
  return ['-o, --output <format>', `output format: ${OUTPUT_FORMATS.join(', ')}`, defaultFormat];
}
