// Bounded hypervisor calls: every call the engine makes has its own timeout, so a hung call
// costs only the instance it was for.
import { DriverError } from '../virt/index.ts';

export function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export function isTimeout(error: unknown): boolean {
  return error instanceof DriverError && error.code === 'timeout';
}

export function withTimeout<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new DriverError('timeout', `${what} did not answer within ${ms} ms`)),
      Math.max(0, ms),
    );
    work.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
