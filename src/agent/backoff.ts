// Waits between attempts to reach the control plane. They double up to a cap, and each is drawn
// at random from the upper half of its range: agents that lost the control plane together (all
// of them, when it restarts) then come back spread out instead of in one wave that fills its
// accept queue and times them all out again.
export class Backoff {
  private ceiling: number;

  constructor(
    private readonly minMs: number,
    private readonly maxMs: number,
    private readonly random: () => number = Math.random,
  ) {
    this.ceiling = minMs;
  }

  /** The next wait, in ms; each call doubles the one after, up to the cap. */
  next(): number {
    const wait = this.ceiling * (0.5 + this.random() / 2);
    this.ceiling = Math.min(this.ceiling * 2, this.maxMs);
    return wait;
  }

  /** Back to the shortest wait, after an attempt that worked. */
  reset(): void {
    this.ceiling = this.minMs;
  }
}
