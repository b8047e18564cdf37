/**
 * Byte sizes as people write them on a command line. Binary units (KiB, MiB,
 * GiB, TiB) and their one-letter forms (K, M, G, T) are powers of 1024;
 * SI units (KB, MB, GB, TB) are powers of 1000, as their names promise.
 */

const UNITS: Readonly<Record<string, number>> = {
  "": 1,
  b: 1,
  k: 1024,
  kib: 1024,
  kb: 1000,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  mb: 1000 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  gb: 1000 ** 3,
  t: 1024 ** 4,
  tib: 1024 ** 4,
  tb: 1000 ** 4,
};

const SIZE = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i;

/** Bytes for `text`, or a RangeError whose message says what is accepted. */
export function parseSize(text: string): number {
  const m = SIZE.exec(text.trim());
  const unit = m?.[2]?.toLowerCase() ?? "";
  const factor = UNITS[unit];
  if (m === null || m[1] === undefined || factor === undefined) {
    throw new RangeError(`"${text}" is not a size; write a number with an optional unit, such as 500MB, 20GiB or 1T`);
  }
  const bytes = Math.floor(Number(m[1]) * factor);
  if (!Number.isSafeInteger(bytes)) throw new RangeError(`"${text}" is too large`);
  return bytes;
}

/** Short human form in binary units, e.g. "1.5 GiB". */
export function formatSize(bytes: number): string {
  const names = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = bytes;
  let i = 0;
  while (Math.abs(value) >= 1024 && i < names.length - 1) {
    value /= 1024;
    i++;
  }
  const digits = i === 0 || value >= 100 ? 0 : 1;
  return `${value.toFixed(digits).replace(/\.0$/, "")} ${names[i]}`;
}
