// Publishing a run's tasks on the work-queue stream, each delivered once however often the job
// is run again within the stream's 10-minute de-duplication window. A task goes out under
// <job>/<layer>/<plan-hash>; when that id is a duplicate, its original is looked at: still
// deliverable (queued, or in flight / awaiting redelivery), it is left alone; gone (acked,
// dropped) or dead (its deliveries ran out: it stays in the stream but is never delivered
// again), the task goes out under the next id of a chain, <id>/1, <id>/2, … — the same chain
// every run walks, so a second rerun finds the first rerun's copy instead of adding another.

import type { JetStreamClient, JetStreamManager, NatsConnection } from 'nats';
import { TASK_STREAM, WORKER_CONSUMER, taskMessageId, taskSubject } from '../../core/cluster/names.js';
import { encodeMessage, type TaskMessage } from '../../core/cluster/messages.js';
import { ArrowQuantError } from '../../core/errors.js';

/** Copies of one task looked at before one is published under this run's own id regardless. */
const MAX_CHAIN = 64;
/** How long publishing one task is retried while NATS does not answer. */
const PUBLISH_RETRY_MS = 30_000;

export type PublishOutcome = 'published' | 'queued';

export class TaskPublisher {
  private constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    /** the shared consumer before this run published: the last stream sequence it delivered */
    private readonly deliveredSeq: number,
    /** and whether any message was in flight or waiting to be redelivered then */
    private readonly anyAckPending: boolean,
    private readonly runId: string,
  ) {}

  /** Reads the shared consumer's state once, before this run publishes anything. */
  static async open(nc: NatsConnection, runId: string): Promise<TaskPublisher> {
    const jsm = await nc.jetstreamManager();
    const info = await jsm.consumers.info(TASK_STREAM, WORKER_CONSUMER);
    return new TaskPublisher(nc.jetstream(), jsm, info.delivered.stream_seq, info.num_ack_pending > 0, runId);
  }

  /**
   * 'queued' when an earlier run's copy of the task will still be delivered; 'published' when this
   * run sent one. NATS may be restarting: retried (de-duplication makes that safe) for a while.
   */
  async publish(msg: TaskMessage): Promise<PublishOutcome> {
    const deadline = Date.now() + PUBLISH_RETRY_MS;
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.publishOnce(msg);
      } catch (e) {
        if (Date.now() > deadline) {
          throw new ArrowQuantError(`cannot publish the task of layer ${msg.task.layer_index} (${msg.task.name}) for ${PUBLISH_RETRY_MS / 1000} s: ${(e as Error).message}`, { cause: e });
        }
        await new Promise((r) => setTimeout(r, Math.min(2_000, 100 * 2 ** attempt)));
      }
    }
  }

  private async publishOnce(msg: TaskMessage): Promise<PublishOutcome> {
    const t = msg.task;
    const base = taskMessageId(t.job_id, t.layer_index, t.plan_hash);
    const data = encodeMessage(msg);
    for (let n = 0; n < MAX_CHAIN; n++) {
      const ack = await this.js.publish(taskSubject(t.job_id), data, { msgID: n === 0 ? base : `${base}/${n}` });
      if (!ack.duplicate) return 'published';
      if (await this.deliverable(ack.seq)) return 'queued';
    }
    await this.js.publish(taskSubject(t.job_id), data, { msgID: `${base}/${this.runId}` });
    return 'published';
  }

  /**
   * Whether the message at `seq` will be delivered (again). Not yet delivered: yes. Delivered
   * and still in the stream: it is in flight or awaiting redelivery — or its deliveries ran out,
   * which consumer info cannot tell apart per message; with nothing at all in flight, it is the latter.
   */
  private async deliverable(seq: number): Promise<boolean> {
    try {
      await this.jsm.streams.getMessage(TASK_STREAM, { seq });
    } catch (e) {
      if (/no message found/i.test((e as Error).message)) return false; // acked or dropped: gone
      throw e;
    }
    return seq > this.deliveredSeq || this.anyAckPending;
  }
}
