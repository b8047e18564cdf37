/**
 * ByteStream transfers of blobs too large to hold in memory, for tests and
 * benches: Write from an iterable of chunks with backpressure, Read that hands
 * each chunk to a callback, both under a deadline. Also the peak RSS of a
 * process, to show that a server streams rather than buffers.
 */
import { readFileSync } from "node:fs";
import type { Digest } from "../../src/digest/digest";
import { ReadRequest, WriteRequest } from "../../src/proto/google/bytestream/bytestream";
import { grpc, type ReapiClients } from "./grpc-client";

/** Resolves when the stream may take more, or settles on error/close so a dead call cannot hang the loop. */
function drained(call: grpc.ClientWritableStream<WriteRequest>): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      call.off("drain", done);
      call.off("error", done);
      call.off("close", done);
      resolve();
    };
    call.on("drain", done);
    call.on("error", done);
    call.on("close", done);
  });
}

/** ByteStream Write of `chunks` (which add up to the digest's size); resolves with the seconds taken. */
export function streamWrite(c: ReapiClients, d: Digest, chunks: Iterable<Uint8Array>, deadlineMs: number): Promise<number> {
  const start = Bun.nanoseconds();
  return new Promise((resolve, reject) => {
    let failed = false;
    const call = c.bytestream.write(new grpc.Metadata(), { deadline: Date.now() + deadlineMs }, (err, res) => {
      if (err !== null) {
        failed = true;
        reject(err);
      } else if (res.committedSize !== d.sizeBytes) reject(new Error(`Write committed ${res.committedSize} of ${d.sizeBytes} bytes`));
      else resolve((Bun.nanoseconds() - start) / 1e9);
    });
    void (async () => {
      const fnSegment = d.fn === "sha256" ? "" : `${d.fn}/`;
      const name = `uploads/${crypto.randomUUID()}/blobs/${fnSegment}${d.hash}/${d.sizeBytes}`;
      let at = 0;
      for (const data of chunks) {
        if (failed) return;
        const ok = call.write(
          WriteRequest.fromPartial({
            resourceName: at === 0 ? name : "",
            writeOffset: at,
            data: Buffer.from(data.buffer, data.byteOffset, data.byteLength),
            finishWrite: at + data.byteLength === d.sizeBytes,
          }),
        );
        at += data.byteLength;
        if (!ok) await drained(call);
      }
      call.end();
    })();
  });
}

export interface StreamReadResult {
  /** Seconds to the end of the stream, or undefined when the deadline hit first (a stall). */
  readonly seconds: number | undefined;
  /** Bytes received. */
  readonly bytes: number;
}

/** ByteStream Read to the end; each chunk goes to `onData` and is then dropped. */
export function streamRead(c: ReapiClients, d: Digest, deadlineMs: number, onData: (chunk: Uint8Array) => void = () => {}): Promise<StreamReadResult> {
  const start = Bun.nanoseconds();
  return new Promise((resolve, reject) => {
    let got = 0;
    const fnSegment = d.fn === "sha256" ? "" : `${d.fn}/`;
    const stream = c.bytestream.read(ReadRequest.fromPartial({ resourceName: `blobs/${fnSegment}${d.hash}/${d.sizeBytes}` }), new grpc.Metadata(), {
      deadline: Date.now() + deadlineMs,
    });
    stream.on("data", (m: { data: Uint8Array }) => {
      got += m.data.byteLength;
      onData(m.data);
    });
    stream.on("error", (err: grpc.ServiceError) => {
      if (err.code === grpc.status.DEADLINE_EXCEEDED) resolve({ seconds: undefined, bytes: got });
      else reject(err);
    });
    stream.on("end", () => {
      if (got !== d.sizeBytes) reject(new Error(`Read returned ${got} of ${d.sizeBytes} bytes`));
      else resolve({ seconds: (Bun.nanoseconds() - start) / 1e9, bytes: got });
    });
  });
}

/** Peak resident set (VmHWM) of a process, in MiB. */
export function vmHwmMiB(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("VmHWM:"));
  const kib = Number(line?.replace(/\D+/g, ""));
  if (!Number.isFinite(kib)) throw new Error(`no VmHWM in /proc/${pid}/status`);
  return kib / 1024;
}
