// A core NATS subscription whose messages are validated with a schema before anything acts on
// them: a malformed one is logged and ignored (an at-most-once event is never the only record).

import type { NatsConnection, Subscription } from 'nats';
import type { z } from 'zod';
import { decodeMessage } from './messages.js';

export function subscribeDecoded<T>(
  nc: NatsConnection, subject: string, schema: z.ZodType<T>, log: (line: string) => void, onMessage: (value: T) => void,
): Subscription {
  return nc.subscribe(subject, {
    callback: (_e, m) => {
      let value: T;
      try {
        value = decodeMessage(schema, m.data, m.subject);
      } catch (err) {
        log(`coordinator: ignoring ${(err as Error).message}`);
        return;
      }
      onMessage(value);
    },
  });
}
