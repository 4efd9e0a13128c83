// pull, images, inspecti, rmi, imagefsinfo (crictl's image verbs) and load (import an image archive).
import type { Command } from 'commander';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CliContext } from '../context.js';
import { imageCall, normalizeEndpoint, type CriClient } from '../client.js';
import { outputOption } from '../context.js';
import { formatTable, parseInfo, type OutputFormat } from '../output.js';
import type { Image__Output } from '../../gen/runtime/v1/Image.js';
import { keyValues, pullAuth } from '../filters.js';
import type { ArchiveRegistry } from '../../image/archive.js';
import type { PullProgress } from '../../image/pull.js';
import { hasTagOrDigest, parseReference, repoName } from '../../image/reference.js';

function humanSize(bytes: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let n = bytes;
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return `${n < 10 && i > 0 ? n.toFixed(1) : Math.round(n)}${units[i]}`;
}

function splitRepoTag(t: string): [string, string] {
  const i = t.lastIndexOf(':');
  return i > t.lastIndexOf('/') ? [t.slice(0, i), t.slice(i + 1)] : [t, '<none>'];
}

/** Which store was looked in: an image pulled for another handler is not in this one (KEP-4216). */
function forHandler(handler: string): string {
  return handler ? ` for runtime handler "${handler}"` : ' for the default runtime handler (see --runtime-handler)';
}

/** `images -v`: one block per image, a line per field, as crictl prints it. */
function verboseImage(img: Image__Output): string {
  return [
    `ID: ${img.id}`,
    ...img.repo_tags.map((t) => `RepoTags: ${t}`),
    ...img.repo_digests.map((d) => `RepoDigests: ${d}`),
    `Size: ${img.size}`,
    ...(img.uid ? [`Uid: ${img.uid.value}`] : []),
    ...(img.username ? [`Username: ${img.username}`] : []),
    ...(img.spec?.runtime_handler ? [`RuntimeHandler: ${img.spec.runtime_handler}`] : []),
    ...(img.pinned ? ['Pinned: true'] : []),
  ].join('\n');
}

const annotations = (list: string[]) => keyValues(list, '--annotation');

/**
 * Draws per-layer progress while a pull runs, by polling ImageStatus(verbose) for the in-flight pull: bars
 * redrawn in place on a terminal, one plain line per layer state change otherwise. The returned function
 * stops it; given the pulled image's layers it first shows them all done (a fast pull may finish between polls).
 */
function watchProgress(client: CriClient, image: string, handler: string, tty: boolean): (done?: { digest: string; size: number }[]) => void {
  let stopped = false;
  let drawn = 0;
  const printed = new Map<string, string>();
  const draw = (p: PullProgress) => {
    if (tty) {
      const lines = p.layers.map((l) => {
        const frac = l.size > 0 ? Math.min(1, l.downloaded / l.size) : 1;
        const width = 30;
        const bar = '='.repeat(Math.round(frac * width)).padEnd(width, ' ');
        return `${l.digest.slice(7, 19)}: ${l.state.padEnd(11)} [${bar}] ${humanSize(l.downloaded)}/${humanSize(l.size)}`;
      });
      process.stderr.write(`${drawn ? `\x1b[${drawn}A` : ''}${lines.map((l) => `\x1b[2K${l}\n`).join('')}`);
      drawn = lines.length;
    } else {
      for (const l of p.layers) {
        const was = printed.get(l.digest);
        if (was !== l.state && l.state !== 'waiting' && !(l.state === 'done' && was === 'exists')) {
          printed.set(l.digest, l.state);
          process.stderr.write(`${l.digest.slice(7, 19)}: ${l.state} (${l.size} bytes)\n`);
        }
      }
    }
  };
  const tick = async () => {
    while (!stopped) {
      await new Promise((r) => setTimeout(r, tty ? 200 : 500));
      if (stopped) break;
      try {
        const st = await imageCall(client, 'ImageStatus', { image: { image, runtime_handler: handler }, verbose: true }, 5000);
        if (st.info.pullProgress && !stopped) draw(JSON.parse(st.info.pullProgress) as PullProgress);
      } catch {
        // progress is best effort; the pull's own result decides success
      }
    }
  };
  void tick();
  return (done) => {
    stopped = true;
    if (done) draw({ reference: image, startedAt: 0, layers: done.map((l) => ({ digest: l.digest, size: l.size, downloaded: l.size, state: printed.get(l.digest) === 'exists' ? 'exists' : 'done' })) });
  };
}

/** The layers ImageStatus(verbose) reports for a pulled image, for the final progress lines. */
async function pulledLayers(client: CriClient, image: string, handler: string): Promise<{ digest: string; size: number }[] | undefined> {
  try {
    const st = await imageCall(client, 'ImageStatus', { image: { image, runtime_handler: handler }, verbose: true }, 5000);
    const info = st.info.info ? (JSON.parse(st.info.info) as { layers?: { digest: string; size: number }[] }) : undefined;
    return info?.layers;
  } catch {
    return undefined;
  }
}

export function registerImages(program: Command, cli: CliContext): void {
  program
    .command('pull')
    .description('Pull an image from a registry')
    .argument('<image>', 'image reference, e.g. busybox or registry:5000/app:v1')
    .option('--creds <user:password>', 'registry credentials')
    .option('--auth <base64>', 'base64-encoded user:password')
    .option('-u, --username <name>', 'registry user name (password from --password or stdin-less prompt)')
    .option('-p, --password <password>', 'registry password')
    .option('--runtime-handler <name>', 'store the image for this runtime handler', '')
    .option('-a, --annotation <key=value...>', 'ImageSpec annotations', [])
    .option('--no-progress', 'no progress output')
    .action(async (image: string, opts: { creds?: string; auth?: string; username?: string; password?: string; runtimeHandler: string; annotation: string[]; progress: boolean }) => {
      const auth = pullAuth(opts);
      const client = cli.client();
      const stop = opts.progress ? watchProgress(client, image, opts.runtimeHandler, process.stderr.isTTY === true) : undefined;
      try {
        // pulls take long: no per-call timeout unless the user set one explicitly
        const res = await imageCall(client, 'PullImage', { image: { image, runtime_handler: opts.runtimeHandler, annotations: annotations(opts.annotation) }, auth }, cli.explicitTimeoutMs());
        stop?.(await pulledLayers(client, res.image_ref, opts.runtimeHandler));
        cli.print(`Image is up to date for ${res.image_ref}`);
      } finally {
        stop?.();
      }
    });

  program
    .command('images')
    .alias('image')
    .description('List images')
    .argument('[repository[:tag]]', 'only this repository (all its tags), or only this image')
    .option('-q, --quiet', 'only image IDs')
    .option('-v, --verbose', 'all fields of each image')
    .option('--digests', 'show digests')
    .option('--no-trunc', 'full IDs')
    .option('--runtime-handler <name>', 'only images of this runtime handler', '')
    .option(...outputOption())
    .action(async (wanted: string | undefined, opts: { quiet?: boolean; verbose?: boolean; digests?: boolean; trunc: boolean; runtimeHandler: string; output: OutputFormat }) => {
      // a name without tag or digest means the whole repository, as with docker images; the daemon's
      // filter (CRI) looks up one image, so the repository is matched here
      const repo = wanted !== undefined && !hasTagOrDigest(wanted) ? repoName(parseReference(wanted)) : undefined;
      const listed = await imageCall(cli.client(), 'ListImages', { filter: { image: { image: repo ? '' : (wanted ?? ''), runtime_handler: opts.runtimeHandler } } });
      const inRepo = (name: string) => repo === undefined || splitRepoTag(name.split('@')[0])[0] === repo;
      const res = { images: listed.images.filter((img) => [...img.repo_tags, ...img.repo_digests].some(inRepo)) };
      if (opts.quiet) {
        cli.print(res.images.map((i) => i.id).join('\n'));
        return;
      }
      if (opts.verbose && opts.output === 'table') {
        cli.print(res.images.map(verboseImage).join('\n\n'));
        return;
      }
      cli.output(opts.output, res, () => {
        const rows: string[][] = [];
        for (const img of res.images) {
          const id = opts.trunc ? img.id.replace(/^sha256:/, '').slice(0, 13) : img.id;
          const tags = img.repo_tags.length ? img.repo_tags : [`${(img.repo_digests[0] ?? '<none>').split('@')[0]}:<none>`];
          for (const t of tags) {
            const [name, tag] = splitRepoTag(t);
            if (!inRepo(name)) continue;
            const digest = (img.repo_digests.find((d) => d.startsWith(`${name}@`)) ?? '').split('@')[1] ?? '<none>';
            rows.push([name, tag, ...(opts.digests ? [opts.trunc ? digest.slice(7, 20) : digest] : []), id, img.spec?.runtime_handler ?? '', humanSize(Number(img.size))]);
          }
        }
        return formatTable(['IMAGE', 'TAG', ...(opts.digests ? ['DIGEST'] : []), 'IMAGE ID', 'HANDLER', 'SIZE'], rows);
      });
    });

  program
    .command('inspecti')
    .description('Return the status of one or more images')
    .argument('<image...>', 'image IDs or names')
    .option('--runtime-handler <name>', 'runtime handler', '')
    .option(...outputOption('json'))
    .action(async (names: string[], opts: { runtimeHandler: string; output: OutputFormat }) => {
      let missing = 0;
      for (const name of names) {
        const st = await imageCall(cli.client(), 'ImageStatus', { image: { image: name, runtime_handler: opts.runtimeHandler }, verbose: true });
        if (!st.image) {
          process.stderr.write(`no such image "${name}" present${forHandler(opts.runtimeHandler)}\n`);
          missing++;
          continue;
        }
        // as crictl: each verbose info key beside the status (`.info` is the daemon's "info")
        cli.output(opts.output, { status: st.image, ...parseInfo(st.info) }, () => `${st.image!.id} ${st.image!.repo_tags.join(',')}`);
      }
      if (missing) throw new Error(`${missing} image(s) not found`);
    });

  program
    .command('rmi')
    .description('Remove one or more images')
    .argument('[image...]', 'image IDs or names')
    .option('-a, --all', 'remove all images')
    .option('--runtime-handler <name>', 'runtime handler', '')
    .action(async (names: string[], opts: { all?: boolean; runtimeHandler: string }) => {
      const client = cli.client();
      let targets: Image__Output[] | string[] = names;
      if (opts.all) targets = (await imageCall(client, 'ListImages', { filter: { image: { image: '', runtime_handler: opts.runtimeHandler } } })).images;
      if (targets.length === 0) throw new Error('no image given (use -a to remove all)');
      for (const t of targets) {
        const name = typeof t === 'string' ? t : t.id;
        const handler = typeof t === 'string' ? opts.runtimeHandler : (t.spec?.runtime_handler ?? '');
        const st = await imageCall(client, 'ImageStatus', { image: { image: name, runtime_handler: handler }, verbose: false });
        if (!st.image) throw new Error(`no such image "${name}"${forHandler(handler)}`);
        await imageCall(client, 'RemoveImage', { image: { image: name, runtime_handler: handler } });
        cli.print(`Deleted: ${name}`);
      }
    });

  program
    .command('imagefsinfo')
    .description('Return image filesystem info')
    .option(...outputOption('json'))
    .action(async (opts: { output: OutputFormat }) => {
      const res = await imageCall(cli.client(), 'ImageFsInfo', {});
      cli.output(opts.output, res, () =>
        [...res.image_filesystems.map((f) => ['image', f]), ...res.container_filesystems.map((f) => ['container', f])]
          .map(([k, f]) => {
            const fs = f as (typeof res.image_filesystems)[number];
            return `${k as string}: ${fs.fs_id?.mountpoint} ${humanSize(Number(fs.used_bytes?.value ?? 0))} ${fs.inodes_used?.value ?? 0} inodes`;
          })
          .join('\n'),
      );
    });

  program
    .command('load')
    .description('Import images from a docker-save or OCI-archive tarball (as `kind load image-archive`)')
    .argument('<archive>', 'path of the tarball')
    .option('--name <reference>', 'name to record when the archive names none')
    .option('--runtime-handler <name>', 'store the image for this runtime handler', '')
    .action(async (file: string, opts: { name?: string; runtimeHandler: string }) => {
      // CRI has no load rpc: the archive is served by a read-only registry on loopback for the duration of
      // one PullImage per image, named as in the archive, with an annotation telling skiff where the bytes are.
      const dir = await mkdtemp(join(tmpdir(), 'skiff-load-'));
      // the image code is loaded only for this verb (it is most of the client's start-up otherwise)
      const [{ ImageArchive, ArchiveRegistry }, { PULL_SOURCE_ANNOTATION, PULL_SOURCE_KEY_ANNOTATION, loadKeyPath }] = await Promise.all([
        import('../../image/archive.js'),
        import('../../image/images.js'),
      ]);
      let server: ArchiveRegistry | undefined;
      try {
        // the daemon honours the pull-source only with its key, which only root on this node can read
        const socket = normalizeEndpoint(cli.endpoint()).replace(/^unix:\/\//, '');
        const keyFile = loadKeyPath(socket);
        const key = await readFile(keyFile, 'utf8').catch((err: unknown) => {
          throw new Error(`cannot read the daemon's load key ${keyFile} (skiff load runs as root on the node): ${err instanceof Error ? err.message : String(err)}`);
        });
        const archive = await ImageArchive.open(file, dir);
        server = new ArchiveRegistry(archive);
        const host = await server.start();
        for (const img of archive.images) {
          const names = img.names.filter((n) => n.includes('/') || n.includes(':') || n.includes('.'));
          if (names.length === 0 && opts.name) names.push(opts.name);
          if (names.length === 0) throw new Error(`the archive names no image for ${img.manifestDigest}; give one with --name`);
          for (const name of names) {
            const res = await imageCall(
              cli.client(),
              'PullImage',
              { image: { image: name, runtime_handler: opts.runtimeHandler, annotations: { [PULL_SOURCE_ANNOTATION]: `${host}/archive@${img.manifestDigest}`, [PULL_SOURCE_KEY_ANNOTATION]: key.trim() } } },
              0,
            );
            cli.print(`Loaded image: ${name} (${res.image_ref})`);
          }
        }
      } finally {
        await server?.stop();
        await rm(dir, { recursive: true, force: true });
      }
    });
}
