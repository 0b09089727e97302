// A refused upload (413, a broken body) is answered before the client has finished sending it.
// Closing the connection at once would make the kernel reset it while the client still writes,
// and most clients then report the reset (EPIPE, ECONNRESET) instead of the answer. So the rest
// of the body is read and thrown away, within limits, and the connection then serves on.
import type { IncomingMessage } from 'node:http';

export interface DiscardLimits {
  /** Bytes read and dropped before giving up and closing. */
  readonly maxBytes: number;
  /** Time allowed for the rest of the upload to arrive. */
  readonly maxMs: number;
}

const DEFAULT_LIMITS: DiscardLimits = { maxBytes: 64 * 1024 * 1024, maxMs: 10_000 };

export function discardRestOfUpload(
  request: IncomingMessage,
  limits: DiscardLimits = DEFAULT_LIMITS,
): void {
  if (request.complete || request.destroyed) return;
  let discarded = 0;
  const giveUp = (): void => {
    cleanUp();
    request.socket.destroy();
  };
  const timer = setTimeout(giveUp, limits.maxMs);
  timer.unref();
  const onData = (chunk: Buffer): void => {
    discarded += chunk.length;
    if (discarded > limits.maxBytes) giveUp();
  };
  const cleanUp = (): void => {
    clearTimeout(timer);
    request.off('data', onData);
    request.off('end', cleanUp);
    request.off('close', cleanUp);
  };
  request.on('data', onData);
  request.once('end', cleanUp);
  request.once('close', cleanUp);
  request.resume();
}
