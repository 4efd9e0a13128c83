// The configured runtime handlers (runc, crun, …): resolves each one's binary and tells whether it is usable.
import type { SkiffConfig, RuntimeHandlerConfig } from '../config/config.js';
import { lookPath } from '../util/which.js';
import { invalidArgument, failedPrecondition, errorMessage } from '../errors.js';

export interface ResolvedHandler extends RuntimeHandlerConfig {
  /** Absolute path of the runtime binary. */
  binary: string;
}

export class RuntimeHandlers {
  constructor(private readonly config: SkiffConfig) {}

  names(): string[] {
    return Object.keys(this.config.runtimes);
  }

  /** '' means the default handler, as in the CRI. Unknown names are INVALID_ARGUMENT. */
  config_(name: string): RuntimeHandlerConfig {
    const key = name === '' ? this.config.defaultRuntime : name;
    const h = this.config.runtimes[key];
    if (!h) throw invalidArgument(`unknown runtime handler "${key}" (configured: ${this.names().join(', ')})`, { handler: key });
    return h;
  }

  /** Resolves the handler's binary; FAILED_PRECONDITION when it is not installed. */
  async resolve(name: string): Promise<ResolvedHandler> {
    const h = this.config_(name);
    const binary = await lookPath(h.path);
    if (!binary) throw failedPrecondition(`runtime handler "${h.name}": binary "${h.path}" not found`, { handler: h.name });
    return { ...h, binary };
  }

  /**
   * Whether containers can run: the default handler's binary and conmon are installed. `reason` is a
   * CamelCase word for the RuntimeReady condition.
   */
  async readiness(): Promise<{ ready: boolean; reason: string; message: string }> {
    try {
      await this.resolve('');
    } catch (err) {
      return { ready: false, reason: 'RuntimeNotFound', message: errorMessage(err) };
    }
    if (!(await lookPath(this.config.conmonPath))) {
      return { ready: false, reason: 'ConmonNotFound', message: `conmon binary "${this.config.conmonPath}" not found` };
    }
    return { ready: true, reason: '', message: '' };
  }
}
