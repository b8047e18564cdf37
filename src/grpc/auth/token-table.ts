import { createHash, timingSafeEqual } from "node:crypto";
import type { Scope } from "./scopes";

/**
 * The bearer tokens lre accepts and what each may do. Tokens are kept only as
 * SHA-256 hashes and a presented token is compared against every entry with
 * timingSafeEqual, without stopping at the first match: hashing first gives
 * equal-length inputs, and the full scan means the reply time says nothing
 * about which entry (or how much of it) matched.
 */
export class TokenTable {
  private readonly entries: ReadonlyArray<{ hash: Buffer; scopes: ReadonlySet<Scope> }>;

  constructor(tokens: Iterable<{ token: string; scopes: Iterable<Scope> }>) {
    this.entries = [...tokens].map((t) => ({ hash: hashOf(t.token), scopes: new Set(t.scopes) }));
  }

  get size(): number {
    return this.entries.length;
  }

  /** The scopes of `token`, or undefined if it is not one of ours. */
  scopesOf(token: string): ReadonlySet<Scope> | undefined {
    const presented = hashOf(token);
    let found: ReadonlySet<Scope> | undefined;
    for (const e of this.entries) {
      if (timingSafeEqual(presented, e.hash)) found ??= e.scopes;
    }
    return found;
  }
}

function hashOf(token: string): Buffer {
  return createHash("sha256").update(token, "utf8").digest();
}
