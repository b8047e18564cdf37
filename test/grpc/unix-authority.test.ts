/**
 * Over unix://, Bazel (grpc-java on netty) names the socket path as the HTTP/2
 * :authority, e.g. "///tmp/x/lre.sock", as a plain (not Huffman-coded) HPACK
 * literal that it adds to the dynamic table and refers to by index on later
 * requests. Bun's HTTP/2 server resets such streams (PROTOCOL_ERROR) unless
 * lre's socket listener fixes the header first (src/grpc/authority-filter.ts).
 *
 * The client here writes those frames byte for byte, as netty does.
 */
import { describe, expect, test } from "bun:test";
import { connect } from "node:net";
import { AuthorityFilter, authorityValues } from "../../src/grpc/authority-filter";
import { ServerCapabilities } from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";
import { startTestServer } from "./harness";

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
const CAPABILITIES = "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities";

function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream, 5);
  return Buffer.concat([head, payload]);
}

/** A plain HPACK string (no Huffman); lengths below 127 are all these tests need. */
function str(s: string): Buffer {
  const b = Buffer.from(s);
  if (b.length >= 127) throw new RangeError("test strings must be shorter than 127 bytes");
  return Buffer.concat([Buffer.from([b.length]), b]);
}

/** Request headers as netty writes them; the authority is new (indexed on first use) or a dynamic-table reference. */
function requestBlock(authority: string | { index: number }): Buffer {
  return Buffer.concat([
    typeof authority === "string"
      ? Buffer.concat([Buffer.from([0x41]), str(authority)]) // literal, incremental indexing, name = static 1 (:authority)
      : Buffer.from([0x80 | authority.index]),
    Buffer.from([0x04]), str(CAPABILITIES), // :path, literal without indexing
    Buffer.from([0x83, 0x86]), // :method POST, :scheme http
    Buffer.from([0x0f, 0x10]), str("application/grpc"), // content-type (static 31), without indexing
    Buffer.from([0x00]), str("te"), str("trailers"),
  ]);
}

/** An empty GetCapabilitiesRequest in gRPC framing, ending the stream. */
const EMPTY_MESSAGE = Buffer.from([0, 0, 0, 0, 0]);

interface Frame {
  type: number;
  flags: number;
  stream: number;
  payload: Buffer;
}

function parseFrames(bytes: Buffer): Frame[] {
  const frames: Frame[] = [];
  for (let p = 0; p + 9 <= bytes.length; ) {
    const length = bytes.readUIntBE(p, 3);
    if (p + 9 + length > bytes.length) break;
    frames.push({ type: bytes[p + 3] as number, flags: bytes[p + 4] as number, stream: bytes.readUInt32BE(p + 5) & 0x7fffffff, payload: bytes.subarray(p + 9, p + 9 + length) });
    p += 9 + length;
  }
  return frames;
}

/** Sends `requests` (header blocks) on streams 1, 3, ...; resolves with the server's frames once every stream has ended. */
function exchange(socketPath: string, blocks: Buffer[]): Promise<Frame[]> {
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath);
    let received = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no complete answer within 10 s; frames so far: ${JSON.stringify(parseFrames(received).map((f) => [f.type, f.stream]))}`));
    }, 10_000);
    socket.on("error", reject);
    socket.on("data", (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      const frames = parseFrames(received);
      for (const f of frames.slice(-1)) {
        if (f.type === 4 && (f.flags & 1) === 0) socket.write(frame(4, 1, 0, Buffer.alloc(0)));
      }
      const ended = new Set(frames.filter((f) => (f.type === 1 && f.flags & 1) || f.type === 3).map((f) => f.stream));
      if (ended.size === blocks.length || frames.some((f) => f.type === 7)) {
        clearTimeout(timer);
        socket.destroy();
        resolve(frames);
      }
    });
    const out = [PREFACE, frame(4, 0, 0, Buffer.alloc(0))];
    blocks.forEach((block, i) => {
      const stream = 1 + 2 * i;
      out.push(frame(1, 0x4, stream, block), frame(0, 0x1, stream, EMPTY_MESSAGE));
    });
    socket.write(Buffer.concat(out));
  });
}

describe("a request naming the socket path as :authority (Bazel over unix://)", () => {
  test("gets a normal answer, also when later requests refer to it through the HPACK dynamic table", async () => {
    const s = await startTestServer();
    try {
      const path = s.address;
      expect(path).toContain("/");
      // Stream 1 adds the authority to the dynamic table (index 62); streams 3 and 5 refer to it.
      const frames = await exchange(path, [requestBlock(`//${path}`), requestBlock({ index: 62 }), requestBlock({ index: 62 })]);
      expect(frames.filter((f) => f.type === 3 || f.type === 7)).toEqual([]);
      for (const stream of [1, 3, 5]) {
        const own = frames.filter((f) => f.stream === stream);
        const data = Buffer.concat(own.filter((f) => f.type === 0).map((f) => f.payload));
        expect(data[0]).toBe(0); // not compressed
        const reply = ServerCapabilities.decode(data.subarray(5, 5 + data.readUInt32BE(1)));
        expect(reply.cacheCapabilities?.digestFunctions.length).toBeGreaterThan(0);
        expect(own.filter((f) => f.type === 1).length).toBe(2); // response headers, then trailers
      }
    } finally {
      await s.stop();
    }
  });
});

describe("AuthorityFilter", () => {
  const stream = (blocks: Buffer[]) =>
    Buffer.concat([PREFACE, frame(4, 0, 0, Buffer.alloc(0)), ...blocks.map((b, i) => frame(1, 0x4, 1 + 2 * i, b)), frame(0, 1, 1, Buffer.alloc(70_000, 7))]);

  test("replaces only the offending bytes, keeping every length, however the bytes are split", () => {
    const input = stream([requestBlock("///tmp/x y@z/lre.sock"), requestBlock({ index: 62 })]);
    for (const size of [1, 2, 9, 10, 17, 4096, input.length]) {
      const filter = new AuthorityFilter();
      const pieces: Buffer[] = [];
      for (let i = 0; i < input.length; i += size) pieces.push(...filter.push(Buffer.from(input.subarray(i, i + size))));
      const output = Buffer.concat(pieces);
      expect(output.length).toBe(input.length);
      expect(output.includes(Buffer.from("___tmp_x_y_z_lre.sock"))).toBe(true);
      const changed = [...input.keys()].filter((k) => input[k] !== output[k]).length;
      expect(changed).toBe(7);
      expect(filter.rewrites).toBe(1);
    }
  });

  test("leaves acceptable, Huffman-coded and empty authorities alone", () => {
    const huffman = Buffer.concat([Buffer.from([0x41, 0x80 | 3]), Buffer.from([0x2f, 0x2f, 0x2f])]);
    for (const block of [requestBlock("localhost:8980"), requestBlock("[::1]:80"), requestBlock(""), huffman]) {
      const input = stream([block]);
      const filter = new AuthorityFilter();
      expect(Buffer.concat(filter.push(Buffer.from(input)))).toEqual(input);
      expect(filter.rewrites).toBe(0);
    }
  });

  test("finds the authority in a header block split over CONTINUATION frames, and with padding and priority", () => {
    const block = requestBlock("/run/lre.sock");
    const split = Buffer.concat([
      PREFACE,
      frame(1, 0x8 | 0x20, 1, Buffer.concat([Buffer.from([2]), Buffer.alloc(5), block.subarray(0, 6), Buffer.alloc(2)])),
      frame(9, 0, 1, block.subarray(6, 10)),
      frame(9, 0x4, 1, block.subarray(10)),
    ]);
    const filter = new AuthorityFilter();
    const output = Buffer.concat(filter.push(Buffer.from(split)));
    expect(output.length).toBe(split.length);
    expect(filter.rewrites).toBe(1);
    const values = authorityValues(Buffer.concat([output.subarray(24 + 9 + 6, 24 + 9 + 12), output.subarray(24 + 9 + 14 + 9, 24 + 9 + 14 + 9 + 4), output.subarray(24 + 9 + 14 + 9 + 4 + 9)]));
    expect(values.length).toBe(1);
  });
});
