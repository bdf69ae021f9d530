/**
 * The promise's outcome, or a rejection `<what> did not answer within <ms> ms` once `ms` have
 * passed since the call; the timer is cleared either way. The promise itself goes on (nothing
 * here can cancel it): use this where a caller must not wait longer than `ms`.
 */
export function withTimeout<T>(promise: Promise<T>, ms: number, what = 'Redis'): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
