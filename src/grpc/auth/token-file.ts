import { readFileSync } from "node:fs";
import { type Scope, SCOPES, isScope } from "./scopes";
import { TokenTable } from "./token-table";

/**
 * The --token-file format: one token per line, `TOKEN SCOPE[,SCOPE...]`, e.g.
 *
 *     # CI may fill the cache, laptops only read it
 *     3f9c...e1  read,write,execute
 *     77ab...02  read
 *
 * `#` starts a comment line; blank lines are ignored. Any other line that does
 * not fit is an error naming the file and line, so a typo never silently
 * leaves a client without access (or with more than intended).
 */
export class TokenFileError extends Error {
  override readonly name = "TokenFileError";
}

/** Tokens shorter than this are refused: a guessable token is no protection. */
export const MIN_TOKEN_LENGTH = 16;

/** Parses the text of a token file; `source` names it in error messages. */
export function parseTokenFile(text: string, source: string): TokenTable {
  const tokens: Array<{ token: string; scopes: Scope[] }> = [];
  const seen = new Set<string>();
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] as string).trim();
    if (line === "" || line.startsWith("#")) continue;
    const where = `${source} line ${i + 1}`;
    const fields = line.split(/\s+/);
    if (fields.length !== 2) {
      throw new TokenFileError(`${where}: expected "TOKEN SCOPE[,SCOPE...]" (scopes: ${SCOPES.join(", ")}), got ${fields.length} field(s)`);
    }
    const [token, scopeList] = fields as [string, string];
    if (token.length < MIN_TOKEN_LENGTH) {
      throw new TokenFileError(`${where}: the token is ${token.length} characters; use at least ${MIN_TOKEN_LENGTH} (e.g. from "openssl rand -hex 32")`);
    }
    if (!/^[\x21-\x7e]+$/.test(token)) {
      throw new TokenFileError(`${where}: the token may only hold printable ASCII characters, as an HTTP header value can`);
    }
    if (seen.has(token)) throw new TokenFileError(`${where}: this token already appears on an earlier line`);
    seen.add(token);
    const scopes: Scope[] = [];
    for (const s of scopeList.split(",")) {
      if (!isScope(s)) throw new TokenFileError(`${where}: unknown scope "${s}"; scopes are ${SCOPES.join(", ")}`);
      if (!scopes.includes(s)) scopes.push(s);
    }
    tokens.push({ token, scopes });
  }
  if (tokens.length === 0) throw new TokenFileError(`${source} holds no tokens; add lines of the form "TOKEN SCOPE[,SCOPE...]"`);
  return new TokenTable(tokens);
}

/** Reads and parses a token file; unreadable and malformed files both throw TokenFileError. */
export function loadTokenFile(path: string): TokenTable {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new TokenFileError(`cannot read token file "${path}": ${err instanceof Error ? err.message : String(err)}`);
  }
  return parseTokenFile(text, `token file "${path}"`);
}
