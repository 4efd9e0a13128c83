// GetContainerEvents: a server stream per subscriber (the kubelet's evented PLEG keeps one open).
// Writes respect gRPC backpressure; a subscriber that falls too far behind gets RESOURCE_EXHAUSTED
// (policy in src/events/subscription.ts) and never holds up the runtime. A client that stops reading
// altogether is detached at once (publishing and other subscribers go on); it sees the status only once
// it reads what was already in flight, since HTTP/2 trailers follow the data. What it pins meanwhile is
// bounded: the stream's write buffer and flow-control window, nothing more is written to it.
import * as grpc from '@grpc/grpc-js';
import type { DaemonContext } from '../daemon/context.js';
import type { CriHandlers } from './server.js';
import type { GetEventsRequest__Output } from '../gen/runtime/v1/GetEventsRequest.js';
import type { ContainerEventResponse } from '../gen/runtime/v1/ContainerEventResponse.js';
import type { ContainerEventFeed } from '../events/container-events.js';
import { resourceExhausted } from '../errors.js';
import { toServiceError } from './grpc-errors.js';

type EventsCall = grpc.ServerWritableStream<GetEventsRequest__Output, ContainerEventResponse>;

export function streamContainerEvents(feed: ContainerEventFeed, call: EventsCall): Promise<void> {
  const sub = feed.subscribe();
  // Headers right away: a client that sees them knows it is subscribed and will miss nothing from now on.
  call.sendMetadata(new grpc.Metadata());
  const stop = () => sub.close();
  call.once('cancelled', stop);
  call.once('close', stop);
  call.once('error', stop);
  return (async () => {
    for await (const event of sub) {
      if (call.cancelled || call.destroyed) break;
      if (!call.write(event)) {
        // Wait for the client to read, but not past the end of the subscription (an overflow while
        // blocked here must end the stream now, not once the client catches up).
        await new Promise<void>((resolve) => {
          const done = () => {
            call.off('drain', done);
            call.off('close', done);
            resolve();
          };
          call.on('drain', done);
          call.on('close', done);
          void sub.whenEnded().then(done);
        });
        if (sub.endReason === 'overflow') break;
      }
    }
    if (call.cancelled || call.destroyed) return;
    if (sub.endReason === 'overflow') {
      call.emit('error', toServiceError(resourceExhausted(`event subscriber fell behind by more than ${sub.limit} events; reconnect and relist`)));
    } else {
      call.end();
    }
  })();
}

export function eventsService(ctx: DaemonContext): Partial<CriHandlers> {
  return {
    runtime: {
      GetContainerEvents: (call: EventsCall) => {
        streamContainerEvents(ctx.containerEvents, call).catch((err: unknown) => ctx.log.warn({ err }, 'GetContainerEvents stream failed'));
      },
    },
  };
}
