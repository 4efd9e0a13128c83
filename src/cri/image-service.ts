// ImageService rpcs: validate and translate only; the work is in src/image/ (ctx.images).
import type { DaemonContext } from '../daemon/context.js';
import type { CriHandlers } from './server.js';
import { unary, cancelSignal } from './server.js';
import { invalidArgument } from '../errors.js';
import { credentialsFromAuthConfig } from '../image/auth.js';
import { formatReference, parseReference } from '../image/reference.js';
import type { ImageRecord } from '../image/image-store.js';
import type { FsUsage } from '../image/images.js';
import type { Image } from '../gen/runtime/v1/Image.js';
import type { ImageSpec__Output } from '../gen/runtime/v1/ImageSpec.js';
import type { PullImageRequest__Output } from '../gen/runtime/v1/PullImageRequest.js';
import type { PullImageResponse } from '../gen/runtime/v1/PullImageResponse.js';
import type { ListImagesRequest__Output } from '../gen/runtime/v1/ListImagesRequest.js';
import type { ListImagesResponse } from '../gen/runtime/v1/ListImagesResponse.js';
import type { ImageStatusRequest__Output } from '../gen/runtime/v1/ImageStatusRequest.js';
import type { ImageStatusResponse } from '../gen/runtime/v1/ImageStatusResponse.js';
import type { RemoveImageRequest__Output } from '../gen/runtime/v1/RemoveImageRequest.js';
import type { RemoveImageResponse } from '../gen/runtime/v1/RemoveImageResponse.js';
import type { ImageFsInfoResponse } from '../gen/runtime/v1/ImageFsInfoResponse.js';
import type { FilesystemUsage } from '../gen/runtime/v1/FilesystemUsage.js';

function requireSpec(spec: ImageSpec__Output | null | undefined): ImageSpec__Output {
  if (!spec || spec.image.trim() === '') throw invalidArgument('ImageSpec.image is required');
  return spec;
}

/** The image config's User: a numeric uid ("1000", "1000:1000") or a name ("nginx", "nginx:nginx"). */
export function imageUser(user: string | undefined): { uid?: string; username: string } {
  // a record stored before configs were checked may hold anything here
  const u = (typeof user === 'string' ? user : '').split(':')[0] ?? '';
  if (u === '') return { username: '' };
  return /^\d+$/.test(u) ? { uid: u, username: '' } : { username: u };
}

export function toCriImage(r: ImageRecord): Image {
  const user = imageUser(r.config.config?.User);
  return {
    id: r.id,
    repo_tags: r.repoTags,
    repo_digests: r.repoDigests,
    size: String(r.size),
    uid: user.uid !== undefined ? { value: user.uid } : null,
    username: user.username,
    spec: { image: r.id, annotations: {}, user_specified_image: r.userSpecifiedImage, runtime_handler: r.runtimeHandler },
    pinned: r.pinned,
  };
}

function toFsUsage(u: FsUsage): FilesystemUsage {
  return {
    timestamp: String(BigInt(Date.now()) * 1_000_000n),
    fs_id: { mountpoint: u.mountpoint },
    used_bytes: { value: String(u.usedBytes) },
    inodes_used: { value: String(u.inodesUsed) },
  };
}

export function imageService(ctx: DaemonContext): Partial<CriHandlers> {
  const images = ctx.images;
  return {
    image: {
      PullImage: unary(async (req: PullImageRequest__Output, call): Promise<PullImageResponse> => {
        const spec = requireSpec(req.image);
        const handler = spec.runtime_handler || req.sandbox_config?.annotations?.['io.kubernetes.cri.runtime-handler'] || undefined;
        const rec = await images.pull({
          image: spec.image,
          handler,
          credentials: credentialsFromAuthConfig(req.auth),
          serverAddress: req.auth?.server_address || undefined,
          annotations: spec.annotations,
          // kubelet gives up on a pull by cancelling it: the download and unpack stop with it
          signal: cancelSignal(call),
        });
        return { image_ref: rec.id };
      }),

      ListImages: unary(async (req: ListImagesRequest__Output): Promise<ListImagesResponse> => {
        const filter = req.filter?.image;
        if (filter && filter.image !== '') {
          const r = await images.resolve(filter.image, filter.runtime_handler || undefined);
          return { images: r ? [toCriImage(r)] : [] };
        }
        return { images: (await images.list(filter?.runtime_handler || undefined)).map(toCriImage) };
      }),

      ImageStatus: unary(async (req: ImageStatusRequest__Output): Promise<ImageStatusResponse> => {
        const spec = requireSpec(req.image);
        const r = await images.resolve(spec.image, spec.runtime_handler || undefined);
        const info: Record<string, string> = {};
        if (req.verbose) {
          if (r) info.info = JSON.stringify({ imageSpec: r.config, chainIds: r.chainIds, layers: r.layers, runtimeHandler: r.runtimeHandler, pulledAt: r.pulledAt });
          // an in-flight pull of this name: `skiff pull` polls this to draw progress
          let key: string | undefined;
          try {
            key = formatReference(parseReference(spec.image));
          } catch {
            key = undefined;
          }
          const progress = key ? images.inflight.get(key) : undefined;
          if (progress) info.pullProgress = JSON.stringify(progress);
        }
        return { image: r ? toCriImage(r) : null, info };
      }),

      RemoveImage: unary(async (req: RemoveImageRequest__Output): Promise<RemoveImageResponse> => {
        const spec = requireSpec(req.image);
        // removing an image that is not there succeeds: the CRI asks for idempotence
        await images.remove(spec.image, spec.runtime_handler || undefined);
        return {};
      }),

      ImageFsInfo: unary(async (): Promise<ImageFsInfoResponse> => {
        const [img, ctr] = await Promise.all([images.imageFilesystemUsage(), images.containerFilesystemUsage()]);
        return { image_filesystems: [toFsUsage(img)], container_filesystems: [toFsUsage(ctr)] };
      }),
    },
  };
}
