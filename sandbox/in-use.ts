/**
 * Host paths bound into sandboxes running in this process. Closure-view
 * collection consults it so a view is never deleted from under a running
 * action (which would make its files vanish mid-build). Other processes are
 * covered by collection's idle threshold, since every use touches the view.
 */
const counts = new Map<string, number>();

/** Marks `paths` in use until the returned function is called (once). */
export function holdPaths(paths: Iterable<string>): () => void {
  const held = [...paths];
  for (const p of held) counts.set(p, (counts.get(p) ?? 0) + 1);
  let released = false;
  return () => {
    if (released) return;
    released = true;
    for (const p of held) {
      const n = (counts.get(p) ?? 1) - 1;
      if (n <= 0) counts.delete(p);
      else counts.set(p, n);
    }
  };
}

export function isPathHeld(path: string): boolean {
  return counts.has(path);
}
