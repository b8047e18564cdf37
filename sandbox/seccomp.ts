/**
 * A small seccomp filter for actions, compiled here to classic BPF so no
 * libseccomp is needed. bwrap loads it with `--seccomp FD` just before
 * executing the command.
 *
 * What it refuses, and why (reliability-targets.md S-1):
 *  - ioctl TIOCSTI / TIOCLINUX: typing into, or reading, a terminal outside
 *    the sandbox. Only the low 32 bits of the request are compared, as the
 *    kernel does, so setting high bits cannot slip past.
 *  - keyctl, add_key, request_key: the kernel keyring is not namespaced.
 *  - bpf, perf_event_open, userfaultfd, io_uring_*: large kernel attack
 *    surface no build step needs.
 *  - kexec_*, init/finit/delete_module, syslog, open_by_handle_at: host
 *    administration or escapes by file handle.
 *  - clone3 answers ENOSYS rather than EPERM: its flags sit in memory a
 *    filter cannot inspect, and libc falls back to clone on ENOSYS.
 *  - other architectures' calling conventions (x32 on x86_64, a foreign
 *    audit arch) kill the process: syscall numbers would mean other calls.
 * Everything else is allowed: the filter narrows the kernel surface; the
 * namespaces and the read-only store are what keep the action in.
 */

const EPERM = 1;
const ENOSYS = 38;
const TIOCSTI = 0x5412;
const TIOCLINUX = 0x541c;

// Classic BPF opcodes and seccomp return values (linux/filter.h, linux/seccomp.h).
const LD_W_ABS = 0x20;
const JEQ_K = 0x15;
const JGE_K = 0x35;
const RET_K = 0x06;
const RET_ALLOW = 0x7fff0000;
const RET_KILL_PROCESS = 0x80000000;
const retErrno = (errno: number): number => 0x00050000 | errno;

// Offsets in struct seccomp_data.
const OFF_NR = 0;
const OFF_ARCH = 4;
const offArgLow = (i: number): number => 16 + 8 * i; // little-endian: low half first

interface ArchTable {
  readonly auditArch: number;
  /** Syscall numbers at or above this belong to another ABI (x32), if any. */
  readonly foreignAbiFrom?: number;
  readonly ioctl: number;
  readonly clone3: number;
  readonly denied: readonly number[];
}

const ARCHES: Record<string, ArchTable> = {
  x64: {
    auditArch: 0xc000003e,
    foreignAbiFrom: 0x40000000,
    ioctl: 16,
    clone3: 435,
    // keyctl add_key request_key bpf perf_event_open userfaultfd kexec_load
    // kexec_file_load init_module finit_module delete_module syslog
    // open_by_handle_at io_uring_setup io_uring_enter io_uring_register
    denied: [250, 248, 249, 321, 298, 323, 246, 320, 175, 313, 176, 103, 304, 425, 426, 427],
  },
  arm64: {
    auditArch: 0xc00000b7,
    ioctl: 29,
    clone3: 435,
    denied: [219, 217, 218, 280, 241, 282, 104, 294, 105, 273, 106, 116, 265, 425, 426, 427],
  },
};

type Insn = [code: number, jt: number, jf: number, k: number];

/**
 * The filter for `arch` (Node's process.arch naming) as bytes of
 * `struct sock_filter[]`, ready to be written to bwrap's `--seccomp` fd.
 */
export function actionSeccompFilter(arch: string = process.arch): Uint8Array {
  const t = ARCHES[arch];
  if (!t) throw new Error(`Cannot build a seccomp filter for architecture "${arch}": only ${Object.keys(ARCHES).join(", ")} are known; disable seccomp to run there`);
  const prog: Insn[] = [];
  // Jump targets are resolved at the end: labels are the three return blocks.
  const fixups: { at: number; jt?: string; jf?: string }[] = [];
  const emit = (insn: Insn, labels: { jt?: string; jf?: string } = {}): void => {
    if (labels.jt !== undefined || labels.jf !== undefined) fixups.push({ at: prog.length, ...labels });
    prog.push(insn);
  };

  emit([LD_W_ABS, 0, 0, OFF_ARCH]);
  emit([JEQ_K, 0, 0, t.auditArch], { jf: "kill" });
  emit([LD_W_ABS, 0, 0, OFF_NR]);
  if (t.foreignAbiFrom !== undefined) emit([JGE_K, 0, 0, t.foreignAbiFrom], { jt: "kill" });
  for (const nr of t.denied) emit([JEQ_K, 0, 0, nr], { jt: "eperm" });
  emit([JEQ_K, 0, 0, t.clone3], { jt: "enosys" });
  emit([JEQ_K, 0, 0, t.ioctl], { jf: "allow" });
  emit([LD_W_ABS, 0, 0, offArgLow(1)]);
  emit([JEQ_K, 0, 0, TIOCSTI], { jt: "eperm" });
  emit([JEQ_K, 0, 0, TIOCLINUX], { jt: "eperm" });
  const labels: Record<string, number> = {};
  labels.allow = prog.length;
  prog.push([RET_K, 0, 0, RET_ALLOW]);
  labels.eperm = prog.length;
  prog.push([RET_K, 0, 0, retErrno(EPERM)]);
  labels.enosys = prog.length;
  prog.push([RET_K, 0, 0, retErrno(ENOSYS)]);
  labels.kill = prog.length;
  prog.push([RET_K, 0, 0, RET_KILL_PROCESS]);

  for (const f of fixups) {
    const insn = prog[f.at] as Insn;
    // BPF jumps are relative to the next instruction and must fit in a byte.
    const rel = (label: string): number => {
      const d = (labels[label] as number) - (f.at + 1);
      if (d < 0 || d > 255) throw new Error(`seccomp filter jump out of range (${d})`);
      return d;
    };
    if (f.jt !== undefined) insn[1] = rel(f.jt);
    if (f.jf !== undefined) insn[2] = rel(f.jf);
  }

  const bytes = new Uint8Array(prog.length * 8);
  const view = new DataView(bytes.buffer);
  prog.forEach(([code, jt, jf, k], i) => {
    view.setUint16(i * 8, code, true);
    view.setUint8(i * 8 + 2, jt);
    view.setUint8(i * 8 + 3, jf);
    view.setUint32(i * 8 + 4, k >>> 0, true);
  });
  return bytes;
}
