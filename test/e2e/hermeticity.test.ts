/**
 * What an action run by `lre serve` can and cannot reach. Each probe is a real
 * action sent over the Unix socket the way a client would: the test uploads
 * the input root, Command and Action, calls Execute, and reads what the
 * action printed. The actions run in bubblewrap against the Nix test
 * toolchain (test/support/nix-fixture.ts): toolchainB -> toolchainA ->
 * busybox, plus an `outsider` path that no probe declares.
 *
 * Probes never write the outsider's full store path into argv or environment:
 * lre adds every store path named there to the action's closure, which would
 * make the path visible and the probe meaningless. They assemble it inside
 * the sandbox from its base name instead.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { basename } from "node:path";
import type { Socket, TCPSocketListener } from "bun";
import type { Digest } from "../../src/digest/digest";
import { digestOf } from "../../src/digest/hasher";
import { EXECUTE_RESPONSE_TYPE_URL } from "../../src/grpc/execution-service";
import { Action, Command, ExecuteResponse } from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";
import { action, command, type CommandSpec, encodeDirectory } from "../exec/helpers";
import { runCommand } from "../support/bazel";
import { createClients, type ReapiClients } from "../support/grpc-client";
import { startLre, type LreServer } from "../support/lre-server";
import { ensureNixToolchain, type NixToolchain } from "../support/nix-fixture";

/** Generous per-test limit for a loaded 2-core machine. Not a timing goal. */
const TEST_TIMEOUT_MS = 60_000;

let lre: LreServer | undefined;
let clients: ReapiClients | undefined;
let nix: NixToolchain;
/** A TCP server on the host's loopback that no action may reach. */
let listener: TCPSocketListener<undefined> | undefined;
let hostConnections = 0;

beforeAll(async () => {
  nix = await ensureNixToolchain();
  lre = await startLre();
  clients = createClients(lre.socketPath);
  listener = Bun.listen<undefined>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(socket: Socket<undefined>) {
        hostConnections += 1;
        socket.end("host secret\n");
      },
      data() {},
    },
  });
}, 300_000);

afterAll(async () => {
  listener?.stop(true);
  clients?.close();
  await lre?.dispose();
}, 60_000);

function rpc(): ReapiClients {
  if (clients === undefined) throw new Error("lre did not start; see beforeAll");
  return clients;
}

/** A unique salt per action, so no probe is answered from the action cache. */
let saltSeq = 0;
const salt = (): string => `hermeticity-${process.pid}-${Date.now()}-${++saltSeq}`;

/** Uploads blobs with one BatchUpdateBlobs call and returns their digests in order. */
async function upload(blobs: readonly Uint8Array[]): Promise<Digest[]> {
  const digests = blobs.map((b) => digestOf("sha256", b));
  const reply = await rpc().batchUpdateBlobs({
    requests: blobs.map((data, i) => ({ digest: { hash: digests[i]!.hash, sizeBytes: digests[i]!.sizeBytes }, data: Buffer.from(data) })),
  });
  for (const r of reply.responses) expect(r.status?.code ?? 0).toBe(0);
  return digests;
}

const text = (s: string): Uint8Array => new TextEncoder().encode(s);

interface Probe {
  /** What the action printed, from the inlined stdout. */
  readonly stdout: string;
  readonly stderr: string;
  readonly exitCode: number;
  readonly response: ExecuteResponse;
}

/**
 * Runs one action: `files` become the input root (flat), the Command is
 * `cmd`, and the Action carries `platform`. Stdout and stderr come back
 * inlined, so a probe needs no further reads.
 */
async function runAction(cmd: CommandSpec, options: { files?: Record<string, string>; platform?: Record<string, string> } = {}): Promise<Probe> {
  const names = Object.keys(options.files ?? {}).sort();
  const fileDigests = await upload(names.map((n) => text(options.files![n]!)));
  const rootBytes = encodeDirectory({ files: names.map((name, i) => ({ name, digest: fileDigests[i]! })) });
  const commandBytes = Command.encode(command(cmd)).finish();
  const [root, commandDigest] = await upload([rootBytes, commandBytes]);
  const actionBytes = Action.encode(
    action({ command: commandDigest!, inputRoot: root!, salt: salt(), ...(options.platform === undefined ? {} : { platform: options.platform }) }),
  ).finish();
  const [actionDigest] = await upload([actionBytes]);

  const ops = await rpc().execute({
    actionDigest: { hash: actionDigest!.hash, sizeBytes: actionDigest!.sizeBytes },
    skipCacheLookup: true,
    inlineStdout: true,
    inlineStderr: true,
  });
  const last = ops[ops.length - 1];
  expect(last?.done).toBe(true);
  expect(last?.response?.typeUrl).toBe(EXECUTE_RESPONSE_TYPE_URL);
  const response = ExecuteResponse.decode(last!.response!.value);
  expect(response.result).toBeDefined();
  const result = response.result!;
  return {
    stdout: await streamText(result.stdoutRaw, result.stdoutDigest),
    stderr: await streamText(result.stderrRaw, result.stderrDigest),
    exitCode: result.exitCode,
    response,
  };
}

/** A standard stream: inlined when the server did so, else read from the CAS. */
async function streamText(raw: Uint8Array, digest: { hash: string; sizeBytes: number } | undefined): Promise<string> {
  if (raw.length > 0 || digest === undefined || digest.sizeBytes === 0) return new TextDecoder().decode(raw);
  const reply = await rpc().batchReadBlobs({ digests: [digest] });
  return new TextDecoder().decode(reply.responses[0]?.data ?? new Uint8Array());
}

/** A shell-script action run by the toolchain's own shell (so toolchainA is named in argv). */
function shell(script: string, env: Record<string, string> = {}): CommandSpec {
  return { argv: [nix.shell, "-c", script], env };
}

describe("an action's view of the host", () => {
  test("/usr, /etc/passwd and the host's home directories do not exist", async () => {
    // The host has them, so their absence below is the sandbox's doing.
    expect(existsSync("/usr/bin")).toBe(true);
    expect(existsSync("/etc/passwd")).toBe(true);

    const probe = await runAction(
      shell(`
        for p in /usr /usr/bin /etc/passwd /etc /bin /root /home /var /work /nix/var; do
          if [ -e "$p" ]; then echo "visible $p"; else echo "absent $p"; fi
        done
        cat /etc/passwd 2>&1 || echo "cat /etc/passwd failed"
      `),
    );
    expect(probe.exitCode).toBe(0);
    for (const p of ["/usr", "/usr/bin", "/etc/passwd", "/etc", "/bin", "/root", "/home", "/var", "/work", "/nix/var"]) {
      expect(probe.stdout).toContain(`absent ${p}\n`);
    }
    expect(probe.stdout).toContain("cat /etc/passwd failed");
    expect(probe.stdout).not.toContain("root:");
  }, TEST_TIMEOUT_MS);

  test("/nix/store holds exactly the declared closure; the outsider path is not there", async () => {
    // The host's store has the outsider (and more), so the listing below is a filtered view.
    expect(existsSync(`${nix.outsider}/secret`)).toBe(true);

    const probe = await runAction(
      shell(`ls /nix/store; cat "/nix/store/$OUTSIDER_NAME/secret" 2>&1 || echo "outsider unreadable"`, {
        OUTSIDER_NAME: basename(nix.outsider),
      }),
      { platform: { "nix-closure": nix.toolchainB } },
    );
    expect(probe.exitCode).toBe(0);
    const listed = probe.stdout.split("\n").filter((l) => l !== "" && l !== "outsider unreadable" && !l.startsWith("cat:"));
    expect(listed.sort()).toEqual([nix.busybox, nix.toolchainA, nix.toolchainB].map((p) => basename(p)).sort());
    expect(probe.stdout).toContain("outsider unreadable");
    expect(probe.stdout).not.toContain("must stay invisible");
  }, TEST_TIMEOUT_MS);

  test("a port listening on the host's 127.0.0.1 cannot be reached", async () => {
    const port = listener!.port;
    // The same probe from the host does connect, so a refusal below is the sandbox's network namespace.
    const fromHost = await runCommand([`${nix.busybox}/bin/busybox`, "nc", "-w", "5", "127.0.0.1", String(port)], { timeoutMs: 20_000 });
    expect(fromHost.stdout).toBe("host secret\n");
    expect(hostConnections).toBe(1);

    const probe = await runAction(
      shell(`if nc -w 5 127.0.0.1 ${port} </dev/null; then echo "connected"; else echo "refused"; fi; wget -q -T 5 -O - http://127.0.0.1:${port}/ 2>&1 || echo "wget failed"`),
    );
    expect(probe.exitCode).toBe(0);
    expect(probe.stdout).toContain("refused");
    expect(probe.stdout).toContain("wget failed");
    expect(probe.stdout).not.toContain("connected");
    expect(probe.stdout).not.toContain("host secret");
    expect(hostConnections).toBe(1);
  }, TEST_TIMEOUT_MS);
});

describe("what an action does see", () => {
  test("a store path in the closure only transitively (busybox via toolchainB) is readable", async () => {
    // Only toolchainB is declared: argv names no store path and the Command
    // sets no PATH, so lre's own PATH (the closure's bin directories) finds sh.
    const hostDigest = new Bun.CryptoHasher("sha256").update(readFileSync(`${nix.busybox}/bin/busybox`)).digest("hex");
    const probe = await runAction(
      { argv: ["sh", "-c", `sha256sum "/nix/store/$BUSYBOX_NAME/bin/busybox"; hello; cat /nix/store/*-toolchain-b/share/greeting`], env: { BUSYBOX_NAME: basename(nix.busybox) } },
      { platform: { "nix-closure": nix.toolchainB } },
    );
    expect(probe.stderr).toBe("");
    expect(probe.exitCode).toBe(0);
    expect(probe.stdout).toBe(`${hostDigest}  /nix/store/${basename(nix.busybox)}/bin/busybox\nhello from toolchain-b\nhello from toolchain-b\n`);
  }, TEST_TIMEOUT_MS);

  test("the environment is exactly the Command's (plus PWD, which bwrap sets to the working directory)", async () => {
    const env = { PATH: `${nix.toolchainA}/bin`, LRE_PROBE: "two words", EMPTY: "", ZZ_LAST: "a=b=c" };
    // env(1) itself as argv[0]: no shell in between to add SHLVL and the like.
    const probe = await runAction({ argv: [`${nix.toolchainA}/bin/env`], env });
    expect(probe.exitCode).toBe(0);
    const lines = probe.stdout.split("\n").filter((l) => l !== "").sort();
    expect(lines).toEqual([...Object.entries(env).map(([k, v]) => `${k}=${v}`), "PWD=/build/root"].sort());
  }, TEST_TIMEOUT_MS);

  test("a Command without PATH gets one made of the closure's bin directories, declared roots first", async () => {
    const probe = await runAction({ argv: [`${nix.toolchainA}/bin/env`], env: { ONLY: "this" } }, { platform: { "nix-closure": nix.toolchainB } });
    expect(probe.exitCode).toBe(0);
    const lines = probe.stdout.split("\n").filter((l) => l !== "").sort();
    // toolchainB is declared; toolchainA is named in argv; busybox comes in through them.
    const path = [nix.toolchainA, nix.toolchainB].sort().map((p) => `${p}/bin`).join(":") + `:${nix.busybox}/bin`;
    expect(lines).toEqual(["ONLY=this", `PATH=${path}`, "PWD=/build/root"]);
  }, TEST_TIMEOUT_MS);

  test("the action runs in its input root and sees its input files", async () => {
    const probe = await runAction(shell("pwd; ls; cat input.txt"), { files: { "input.txt": "from the input root\n" } });
    expect(probe.exitCode).toBe(0);
    expect(probe.stdout).toBe("/build/root\ninput.txt\nfrom the input root\n");
  }, TEST_TIMEOUT_MS);
});

describe("an action that reaches outside its closure", () => {
  test("fails, and ExecuteResponse.message names the path and how to declare it", async () => {
    // The path is only in an input file, never in argv or env, so lre cannot
    // know it in advance; it shows up in the action's stderr.
    const probe = await runAction(
      { argv: [nix.shell, "build.sh"] },
      { files: { "build.sh": `cat ${nix.outsider}/secret\n` }, platform: { "nix-closure": nix.toolchainB } },
    );
    expect(probe.exitCode).not.toBe(0);
    expect(probe.stderr).toContain(`${nix.outsider}/secret`);
    expect(probe.stdout).toBe("");
    const message = probe.response.message;
    expect(message).toContain(nix.outsider);
    expect(message).toContain("outside its Nix closure");
    expect(message).toContain('"nix-closure"');
    expect(message).toContain(`exec_properties = {"nix-closure": "${nix.outsider}"}`);
    // Not a server failure: the action ran and failed on its own.
    expect(probe.response.status?.code ?? 0).toBe(0);
    expect(probe.response.cachedResult).toBe(false);
  }, TEST_TIMEOUT_MS);

  test("a store path named in argv but unknown to Nix is refused before it runs, with the fix in the error", async () => {
    const bogus = `/nix/store/${"0".repeat(32)}-not-built`;
    expect(existsSync(bogus)).toBe(false);
    const err = await runAction(shell(`${bogus}/bin/tool`)).then(
      () => undefined,
      (e: unknown) => e as { code?: number; details?: string },
    );
    expect(err?.code).toBe(9); // FAILED_PRECONDITION
    expect(err?.details).toContain(bogus);
    expect(err?.details).toContain("nix-store --realise");
  }, TEST_TIMEOUT_MS);
});
