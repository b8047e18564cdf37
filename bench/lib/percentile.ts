/** The p-th percentile (0..100) of samples, nearest-rank. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) throw new RangeError("percentile of no samples");
  const s = [...xs].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * s.length);
  return s[Math.min(s.length - 1, Math.max(0, rank - 1))]!;
}

/** Milliseconds `fn` takes, by the monotonic nanosecond clock. */
export async function timeMs(fn: () => Promise<unknown> | unknown): Promise<number> {
  const start = Bun.nanoseconds();
  await fn();
  return (Bun.nanoseconds() - start) / 1e6;
}
