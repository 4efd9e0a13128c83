// Issue 6, evented PLEG with real containers (runc under conmon): two subscribers see the exact event
// sequence of a pod with two containers, and every event carries statuses that agree with ContainerStatus
// and PodSandboxStatus at that moment.
import { describe, it, expect } from 'vitest';
import type { ClientReadableStream } from '@grpc/grpc-js';
import { runtimeCall } from '../../src/cli/client.js';
import { k129Suite, runK129Pod, k129CtrConfig } from '../helpers/k129.js';
import type { ContainerEventResponse__Output } from '../../src/gen/runtime/v1/ContainerEventResponse.js';

const suite = k129Suite();

class Recorder {
  readonly events: ContainerEventResponse__Output[] = [];
  error?: Error;
  /** Resolves once the server has subscribed this stream (it sends headers then). */
  readonly subscribed: Promise<void>;
  constructor(readonly call: ClientReadableStream<ContainerEventResponse__Output>) {
    call.on('data', (e: ContainerEventResponse__Output) => this.events.push(e));
    call.on('error', (e: Error) => (this.error = e));
    this.subscribed = new Promise((r) => call.once('metadata', () => r()));
  }
  async waitFor(pred: (e: ContainerEventResponse__Output) => boolean, what: string, ms = 20_000): Promise<ContainerEventResponse__Output> {
    const deadline = Date.now() + ms;
    for (;;) {
      const hit = this.events.find(pred);
      if (hit) return hit;
      if (this.error) throw this.error;
      if (Date.now() > deadline) throw new Error(`no ${what} event within ${ms} ms; got ${this.events.map((e) => e.container_event_type).join(', ')}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

const STATE_AFTER: Record<string, string> = {
  CONTAINER_CREATED_EVENT: 'CONTAINER_CREATED',
  CONTAINER_STARTED_EVENT: 'CONTAINER_RUNNING',
  CONTAINER_STOPPED_EVENT: 'CONTAINER_EXITED',
};

describe('GetContainerEvents with real containers', () => {
  it('streams created, started, an exit by itself, stopped and deleted, with statuses of that moment', async () => {
    const e = suite.env();
    const subs = [new Recorder(e.d.client.runtime.GetContainerEvents({})), new Recorder(e.d.client.runtime.GetContainerEvents({}))];
    await Promise.all(subs.map((s) => s.subscribed));
    const pod = await runK129Pod(e);
    const createC = async (name: string, cmd: string[]) =>
      (await runtimeCall(e.d.client, 'CreateContainer', { pod_sandbox_id: pod.id, config: k129CtrConfig(name, cmd), sandbox_config: pod.config })).container_id;
    const long = await createC('long', ['sleep', '1000']);
    const short = await createC('short', ['sh', '-c', 'sleep 1; exit 3']);
    await runtimeCall(e.d.client, 'StartContainer', { container_id: long });
    await runtimeCall(e.d.client, 'StartContainer', { container_id: short });
    for (const s of subs) await s.waitFor((x) => x.container_id === short && x.container_event_type === 'CONTAINER_STOPPED_EVENT', 'short STOPPED');

    // The exit as ContainerStatus reports it, and as the STOPPED event carried it.
    const shortStatus = (await runtimeCall(e.d.client, 'ContainerStatus', { container_id: short })).status!;
    expect(shortStatus).toMatchObject({ state: 'CONTAINER_EXITED', exit_code: 3, reason: 'Error' });
    const stopped = subs[0].events.find((x) => x.container_id === short && x.container_event_type === 'CONTAINER_STOPPED_EVENT')!;
    const inEvent = stopped.containers_statuses.find((c) => c.id === short)!;
    for (const k of ['state', 'exit_code', 'reason', 'created_at', 'started_at', 'finished_at', 'image_ref', 'log_path'] as const) {
      expect(inEvent[k], k).toEqual(shortStatus[k]);
    }
    expect(stopped.containers_statuses.find((c) => c.id === long)?.state).toBe('CONTAINER_RUNNING');
    const podStatus = await runtimeCall(e.d.client, 'PodSandboxStatus', { pod_sandbox_id: pod.id });
    expect(stopped.pod_sandbox_status).toMatchObject({ id: pod.id, state: 'SANDBOX_READY', created_at: podStatus.status!.created_at });
    expect(stopped.pod_sandbox_status!.network).toEqual(podStatus.status!.network);
    // 1.29: PodSandboxStatus carries the containers' statuses and a nanosecond timestamp, always together
    expect(podStatus.containers_statuses.map((c) => c.id).sort()).toEqual([long, short].sort());
    expect(podStatus.containers_statuses.find((c) => c.id === short)).toMatchObject({ state: 'CONTAINER_EXITED', exit_code: 3 });
    expect(BigInt(podStatus.timestamp)).toBeGreaterThan(BigInt(Date.now() - 60_000) * 1_000_000n);

    // RemoveContainer of the running one stops it first: STOPPED then DELETED
    await runtimeCall(e.d.client, 'RemoveContainer', { container_id: long });
    await runtimeCall(e.d.client, 'RemoveContainer', { container_id: short });
    for (const s of subs) await s.waitFor((x) => x.container_id === short && x.container_event_type === 'CONTAINER_DELETED_EVENT', 'short DELETED');
    await runtimeCall(e.d.client, 'RemovePodSandbox', { pod_sandbox_id: pod.id });

    const expected = [
      ['long', 'CONTAINER_CREATED_EVENT'],
      ['short', 'CONTAINER_CREATED_EVENT'],
      ['long', 'CONTAINER_STARTED_EVENT'],
      ['short', 'CONTAINER_STARTED_EVENT'],
      ['short', 'CONTAINER_STOPPED_EVENT'],
      ['long', 'CONTAINER_STOPPED_EVENT'],
      ['long', 'CONTAINER_DELETED_EVENT'],
      ['short', 'CONTAINER_DELETED_EVENT'],
    ];
    const name = (id: string) => (id === long ? 'long' : id === short ? 'short' : id);
    for (const s of subs) {
      expect(s.error).toBeUndefined();
      expect(s.events.map((x) => [name(x.container_id), x.container_event_type])).toEqual(expected);
      let last = 0n;
      for (const ev of s.events) {
        // nanoseconds since the epoch, in order
        expect(BigInt(ev.created_at)).toBeGreaterThan(BigInt(Date.now() - 600_000) * 1_000_000n);
        expect(BigInt(ev.created_at)).toBeGreaterThanOrEqual(last);
        last = BigInt(ev.created_at);
        expect(ev.pod_sandbox_status?.id).toBe(pod.id);
        const own = ev.containers_statuses.find((c) => c.id === ev.container_id);
        if (ev.container_event_type === 'CONTAINER_DELETED_EVENT') expect(own).toBeUndefined();
        else expect(own?.state, `${name(ev.container_id)} ${ev.container_event_type}`).toBe(STATE_AFTER[ev.container_event_type]);
      }
    }
    expect(subs[1].events).toEqual(subs[0].events);
    for (const s of subs) s.call.cancel();
  });
});
