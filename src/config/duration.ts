const UNIT_MS: Readonly<Record<string, number>> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

export interface DurationOptions {
  /** Also accept `0` (and zero amounts such as `0h`), for flags where zero switches something off. */
  readonly allowZero?: boolean;
}

/** `30m`, `2h`, `7d`, `1w`, or a sum such as `1h30m`; milliseconds. */
export function parseDuration(text: string, options: DurationOptions = {}): number {
  const allowZero = options.allowZero === true;
  if (allowZero && /^0+$/.test(text)) return 0;
  if (!/^(\d+(\.\d+)?[smhdw])+$/.test(text)) {
    const zero = allowZero ? ", or 0 for none" : "";
    throw new RangeError(`"${text}" is not a duration such as 30m, 2h, 7d or 1h30m (units s, m, h, d, w)${zero}`);
  }
  let ms = 0;
  for (const [, n, unit] of text.matchAll(/(\d+(?:\.\d+)?)([smhdw])/g)) ms += Number(n) * (UNIT_MS[unit as string] ?? 0);
  if (ms <= 0 && !allowZero) throw new RangeError(`duration "${text}" must be more than zero`);
  return Math.round(ms);
}

/** The shortest text parseDuration reads back as `ms` (whole seconds), e.g. `3h` or `1h30m`; `0` for zero. */
export function formatDuration(ms: number): string {
  let rest = Math.round(ms / 1000);
  if (rest === 0) return "0";
  let text = "";
  for (const [unit, size] of [["d", 86_400], ["h", 3600], ["m", 60], ["s", 1]] as const) {
    const n = Math.floor(rest / size);
    if (n > 0) text += `${n}${unit}`;
    rest -= n * size;
  }
  return text;
}
