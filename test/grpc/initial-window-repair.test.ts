/**
 * InitialWindowRepair as a byte-stream transformation: what Bun's HTTP/2
 * server receives instead of the client's bytes (see
 * src/grpc/initial-window-repair.ts for why), checked frame by frame.
 */
import { describe, expect, test } from "bun:test";
import { InitialWindowRepair } from "../../src/grpc/initial-window-repair";
import { FLAG, FRAME, SETTING_INITIAL_WINDOW_SIZE, frame, grpcRequestHeaders, settingsFrame, windowUpdate } from "./raw-http2";

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
const MAX_FRAME_SIZE = 0x5;

/** Feeds `bytes` in pieces of `step` bytes and returns everything passed on. */
function feed(repair: InitialWindowRepair, bytes: Buffer, step = bytes.length): Buffer {
  const out: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += step) out.push(...repair.fromClient(bytes.subarray(i, i + step)));
  return Buffer.concat(out);
}

const data = (stream: number, n: number, flags = 0) => frame(FRAME.DATA, flags, stream, Buffer.alloc(n, 7));

describe("InitialWindowRepair", () => {
  test("frames without an initial window setting pass through byte for byte, in any chunking", () => {
    const bytes = Buffer.concat([
      PREFACE,
      settingsFrame([[MAX_FRAME_SIZE, 32_768]]),
      grpcRequestHeaders(1, "/p"),
      data(1, 100, FLAG.END_STREAM),
      windowUpdate(0, 1000),
      settingsFrame([], FLAG.ACK),
    ]);
    for (const step of [1, 5, 9, 10, 64, bytes.length]) {
      expect(feed(new InitialWindowRepair(), bytes, step).equals(bytes)).toBe(true);
    }
  });

  test("the initial window size is taken out of SETTINGS; other settings stay, and the frame still needs its ACK", () => {
    const out = feed(
      new InitialWindowRepair(),
      Buffer.concat([PREFACE, settingsFrame([[MAX_FRAME_SIZE, 32_768], [SETTING_INITIAL_WINDOW_SIZE, 1_048_576]])]),
    );
    expect(out.equals(Buffer.concat([PREFACE, settingsFrame([[MAX_FRAME_SIZE, 32_768]])]))).toBe(true);
  });

  test("a stream opened after a larger initial window gets the difference right after its header block", () => {
    const bytes = Buffer.concat([PREFACE, settingsFrame([[SETTING_INITIAL_WINDOW_SIZE, 1_048_576]]), grpcRequestHeaders(1, "/p"), data(1, 10, FLAG.END_STREAM)]);
    const expected = Buffer.concat([PREFACE, settingsFrame([]), grpcRequestHeaders(1, "/p"), windowUpdate(1, 1_048_576 - 65_535), data(1, 10, FLAG.END_STREAM)]);
    for (const step of [1, 7, bytes.length]) expect(feed(new InitialWindowRepair(), bytes, step).equals(expected)).toBe(true);
  });

  test("a header block continued in CONTINUATION frames gets its grant after the last one", () => {
    const block = Buffer.from([0x82, 0x86, 0x84]);
    const bytes = Buffer.concat([
      PREFACE,
      settingsFrame([[SETTING_INITIAL_WINDOW_SIZE, 100_000]]),
      frame(FRAME.HEADERS, 0, 1, block),
      frame(0x9, FLAG.END_HEADERS, 1, block),
    ]);
    const out = feed(new InitialWindowRepair(), bytes, 3);
    expect(out.equals(Buffer.concat([PREFACE, settingsFrame([]), frame(FRAME.HEADERS, 0, 1, block), frame(0x9, FLAG.END_HEADERS, 1, block), windowUpdate(1, 100_000 - 65_535)]))).toBe(true);
  });

  test("raising the initial window grants the difference to every stream the server has not finished, after the SETTINGS", () => {
    const repair = new InitialWindowRepair();
    feed(repair, Buffer.concat([PREFACE, settingsFrame([]), grpcRequestHeaders(1, "/p"), grpcRequestHeaders(3, "/p"), grpcRequestHeaders(5, "/p"), grpcRequestHeaders(7, "/p")]));
    // The server ends stream 1 with trailers, the client resets 3, the server resets 5.
    repair.fromServer(Buffer.concat([settingsFrame([]), frame(FRAME.HEADERS, FLAG.END_HEADERS, 1), data(1, 5), frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1)]));
    feed(repair, frame(FRAME.RST_STREAM, 0, 3, Buffer.alloc(4)));
    repair.fromServer(frame(FRAME.RST_STREAM, 0, 5, Buffer.alloc(4)));
    expect(repair.openStreams).toBe(1);

    const raise = settingsFrame([[SETTING_INITIAL_WINDOW_SIZE, 131_070]]);
    expect(feed(repair, raise, 4).equals(Buffer.concat([settingsFrame([]), windowUpdate(7, 65_535)]))).toBe(true);
    // Only the difference to the previous size counts.
    expect(feed(repair, settingsFrame([[SETTING_INITIAL_WINDOW_SIZE, 200_000]])).equals(Buffer.concat([settingsFrame([]), windowUpdate(7, 200_000 - 131_070)]))).toBe(true);
  });

  test("a lowered initial window cannot be passed on: no grant, and later streams get the lower size", () => {
    const repair = new InitialWindowRepair();
    feed(repair, Buffer.concat([PREFACE, settingsFrame([[SETTING_INITIAL_WINDOW_SIZE, 300_000]]), grpcRequestHeaders(1, "/p")]));
    expect(feed(repair, settingsFrame([[SETTING_INITIAL_WINDOW_SIZE, 100_000]])).equals(settingsFrame([]))).toBe(true);
    const out = feed(repair, grpcRequestHeaders(3, "/p"));
    expect(out.equals(Buffer.concat([grpcRequestHeaders(3, "/p"), windowUpdate(3, 100_000 - 65_535)]))).toBe(true);
  });

  test("server frames are only watched: split anywhere, they still end the right streams", () => {
    const repair = new InitialWindowRepair();
    feed(repair, Buffer.concat([PREFACE, settingsFrame([]), grpcRequestHeaders(1, "/p"), grpcRequestHeaders(3, "/p")]));
    const server = Buffer.concat([data(1, 20_000), data(3, 3, FLAG.END_STREAM), data(1, 1)]);
    for (let i = 0; i < server.length; i += 4096) repair.fromServer(server.subarray(i, i + 4096));
    expect(repair.openStreams).toBe(1);
  });
});
