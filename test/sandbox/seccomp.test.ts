/**
 * The seccomp filter, probed with real system calls from inside sandboxes.
 * The probe is a tiny static x86_64 program generated below: it makes one
 * system call and exits with its errno (0 on success), so no compiler or
 * libc is needed in the closure. Every probe also runs with seccomp off, to
 * show that the filter, not something else, produced the answer. The probe
 * is x86_64 machine code, like the test machines.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { actionSeccompFilter, runSandboxed } from "../../sandbox/mod";
import { actionSpec, sandboxWorld, tempDir } from "./helpers";
import type { SandboxWorld } from "./helpers";

const EPERM = 1;
const EFAULT = 14;
const EINVAL = 22;
const ENOTTY = 25;
const ENOSYS = 38;

/** An ELF64 executable doing syscall(nr, a0, a1, a2, a3) then exit_group(errno or 0). */
function syscallProbe(nr: number, args: readonly bigint[] = []): Uint8Array {
  const movImm = (prefix: number[], v: bigint): number[] => {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt.asUintN(64, v), true);
    return [...prefix, ...b];
  };
  const [a0 = 0n, a1 = 0n, a2 = 0n, a3 = 0n] = args;
  const code = [
    ...movImm([0x48, 0xb8], BigInt(nr)), // mov rax, nr
    ...movImm([0x48, 0xbf], a0), // mov rdi, a0
    ...movImm([0x48, 0xbe], a1), // mov rsi, a1
    ...movImm([0x48, 0xba], a2), // mov rdx, a2
    ...movImm([0x49, 0xba], a3), // mov r10, a3
    0x0f, 0x05, // syscall
    0x48, 0xf7, 0xd8, // neg rax: errno if it failed
    0x48, 0x85, 0xc0, // test rax, rax
    0x7f, 0x02, // jg +2: keep a positive errno
    0x31, 0xc0, // xor eax, eax: success
    0x48, 0x89, 0xc7, // mov rdi, rax
    0xb8, 0xe7, 0x00, 0x00, 0x00, // mov eax, exit_group
    0x0f, 0x05, // syscall
  ];
  const base = 0x400000n;
  const headers = 64 + 56;
  const total = headers + code.length;
  const elf = new Uint8Array(total);
  const v = new DataView(elf.buffer);
  elf.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]); // ELF, 64-bit, little-endian, current version
  v.setUint16(16, 2, true); // ET_EXEC
  v.setUint16(18, 0x3e, true); // x86-64
  v.setUint32(20, 1, true);
  v.setBigUint64(24, base + BigInt(headers), true); // entry
  v.setBigUint64(32, 64n, true); // program headers right after this header
  v.setUint16(52, 64, true);
  v.setUint16(54, 56, true);
  v.setUint16(56, 1, true);
  // PT_LOAD of the whole file, read + execute.
  v.setUint32(64, 1, true);
  v.setUint32(68, 5, true);
  v.setBigUint64(72, 0n, true);
  v.setBigUint64(80, base, true);
  v.setBigUint64(88, base, true);
  v.setBigUint64(96, BigInt(total), true);
  v.setBigUint64(104, BigInt(total), true);
  v.setBigUint64(112, 0x1000n, true);
  elf.set(code, headers);
  return elf;
}

let w: SandboxWorld;
let root: string;

beforeAll(async () => {
  w = await sandboxWorld();
  root = tempDir("seccomp");
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

async function probe(name: string, nr: number, args: readonly bigint[], seccomp: boolean): Promise<number> {
  const file = join(root, name);
  writeFileSync(file, syscallProbe(nr, args));
  chmodSync(file, 0o755);
  const spec = { ...actionSpec(w, root, ""), argv: [`/build/${name}`] };
  const r = await runSandboxed(spec, { stdoutPath: `${file}.out`, stderrPath: `${file}.err`, timeoutMs: 20_000, seccomp });
  return r.exitCode;
}

const TIOCSTI = 0x5412n;
const TIOCLINUX = 0x541cn;

// [name, x86_64 syscall number, args, errno with the filter, errno without]
const CASES: [string, number, bigint[], number, number][] = [
  ["getpid (ordinary calls still work)", 39, [], 0, 0],
  ["ioctl TIOCSTI", 16, [0n, TIOCSTI, 0n], EPERM, ENOTTY],
  ["ioctl TIOCSTI with high bits set", 16, [0n, (1n << 32n) | TIOCSTI, 0n], EPERM, ENOTTY],
  ["ioctl TIOCLINUX", 16, [0n, TIOCLINUX, 0n], EPERM, ENOTTY],
  ["ioctl of another request", 16, [0n, 0x5401n /* TCGETS */, 0n], ENOTTY, ENOTTY],
  ["keyctl get session keyring", 250, [0n, BigInt.asUintN(64, -3n), 0n], EPERM, 0],
  ["clone3 (ENOSYS so libc falls back to clone)", 435, [0n, 0n], ENOSYS, EINVAL],
  ["perf_event_open", 298, [0n, 0n, BigInt.asUintN(64, -1n), BigInt.asUintN(64, -1n)], EPERM, EFAULT],
];

describe("actionSeccompFilter", () => {
  test("is a well-formed BPF program for known architectures and refuses unknown ones", () => {
    for (const arch of ["x64", "arm64"]) {
      const prog = actionSeccompFilter(arch);
      expect(prog.byteLength % 8).toBe(0);
      expect(prog.byteLength / 8).toBeLessThan(64);
    }
    expect(() => actionSeccompFilter("mips")).toThrow(/architecture "mips"/);
  });

  test("the filter is in force inside the sandbox", async () => {
    const out = join(root, "status");
    await runSandboxed(actionSpec(w, root, "grep Seccomp: /proc/self/status"), { stdoutPath: out, stderrPath: `${out}.err`, timeoutMs: 20_000 });
    expect(await Bun.file(out).text()).toBe("Seccomp:\t2\n");
  });

  test("a system call through the x32 ABI kills the process (SIGSYS) instead of being misread", async () => {
    expect(await probe("x32-getpid-on", 0x40000000 | 39, [], true)).toBe(128 + 31);
  });

  for (const [name, nr, args, filtered, unfiltered] of CASES) {
    test(`${name}: errno ${filtered} with the filter, ${unfiltered} without`, async () => {
      const slug = name.replace(/[^a-z0-9]+/gi, "-");
      expect(await probe(`${slug}-on`, nr, args, true)).toBe(filtered);
      expect(await probe(`${slug}-off`, nr, args, false)).toBe(unfiltered);
    });
  }
});
