// One listener fan-out for the whole code base, with one error policy: a listener that throws is
// counted and reported through `onListenerError`, and every other listener still runs. Nothing
// is swallowed silently: without a hook the error becomes a process warning. Depends on nothing,
// so the wire client, drivers, stores and engine can all use it.

export type ListenerErrorHook = (error: unknown) => void;

function warn(error: unknown): void {
  const detail = error instanceof Error ? (error.stack ?? error.message) : String(error);
  process.emitWarning(`an event listener threw: ${detail}`, 'ListenerError');
}

export class Emitter<Args extends readonly unknown[]> {
  // Entries, not the functions themselves, so one function registered twice runs twice and each
  // registration's remover removes only itself.
  readonly #listeners = new Set<{ readonly listener: (...args: Args) => void }>();
  readonly #onListenerError: ListenerErrorHook;
  #listenerErrors = 0;

  constructor(onListenerError: ListenerErrorHook = warn) {
    this.#onListenerError = onListenerError;
  }

  /** Listeners that threw, over the emitter's life. */
  get listenerErrors(): number {
    return this.#listenerErrors;
  }

  get size(): number {
    return this.#listeners.size;
  }

  /** Registers `listener`; the returned function unregisters it. */
  on(listener: (...args: Args) => void): () => void {
    const entry = { listener };
    this.#listeners.add(entry);
    return () => {
      this.#listeners.delete(entry);
    };
  }

  /** Calls every listener registered now, in registration order. Returns how many threw. */
  emit(...args: Args): number {
    let thrown = 0;
    for (const { listener } of [...this.#listeners]) {
      try {
        listener(...args);
      } catch (error) {
        thrown++;
        this.#listenerErrors++;
        try {
          this.#onListenerError(error);
        } catch {
          // The error hook failing must not stop delivery to the remaining listeners either.
        }
      }
    }
    return thrown;
  }

  clear(): void {
    this.#listeners.clear();
  }
}
