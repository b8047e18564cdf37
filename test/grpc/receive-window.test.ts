/**
 * The server's HTTP/2 receive windows (src/grpc/receive-window.ts): it
 * announces STREAM_RECEIVE_WINDOW as SETTINGS_INITIAL_WINDOW_SIZE and widens
 * the connection window to CONNECTION_RECEIVE_WINDOW, and it really accepts
 * that much: an upload far larger than the 65,535-byte default arrives whole
 * without a single WINDOW_UPDATE from the server. With the defaults a Write of
 * 64 KiB messages waits for a WINDOW_UPDATE round trip after every message.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { WriteRequest, WriteResponse } from "../../src/proto/google/bytestream/bytestream";
import { CONNECTION_RECEIVE_WINDOW, STREAM_RECEIVE_WINDOW } from "../../src/grpc/receive-window";
import { type TestServer, TRANSPORTS, blob, bytes, startTestServer } from "./harness";
import { FLAG, FRAME, type Frame, RawHttp2Connection, frame, grpcMessages, grpcRequestHeaders } from "./raw-http2";

const KiB = 1024;
const MiB = 1024 * KiB;
const DEFAULT_WINDOW = 65_535;
const SETTING_INITIAL_WINDOW_SIZE = 0x4;
const WRITE_PATH = "/google.bytestream.ByteStream/Write";

for (const transport of TRANSPORTS) {
  describe(`HTTP/2 receive windows (${transport})`, () => {
    let t: TestServer;
    beforeAll(async () => {
      t = await startTestServer({ transport });
    });
    afterAll(async () => {
      await t.stop();
    });

    test("the server announces the stream window and widens the connection window", async () => {
      const conn = await RawHttp2Connection.open(t.address);
      try {
        const frames: Frame[] = [];
        conn.onFrame((f) => frames.push(f));
        const deadline = Date.now() + 5000;
        const settings = () => frames.find((f) => f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) === 0);
        const connectionUpdate = () => frames.find((f) => f.type === FRAME.WINDOW_UPDATE && f.stream === 0);
        while ((settings() === undefined || connectionUpdate() === undefined) && Date.now() < deadline) await Bun.sleep(10);

        const entries = new Map<number, number>();
        const payload = settings()?.payload ?? Buffer.alloc(0);
        for (let p = 0; p + 6 <= payload.length; p += 6) entries.set(payload.readUInt16BE(p), payload.readUInt32BE(p + 2));
        expect(entries.get(SETTING_INITIAL_WINDOW_SIZE)).toBe(STREAM_RECEIVE_WINDOW);
        expect(connectionUpdate()?.payload.readUInt32BE(0)).toBe(CONNECTION_RECEIVE_WINDOW - DEFAULT_WINDOW);
      } finally {
        conn.close();
      }
    });

    test("a 4 MiB upload is accepted without waiting for any WINDOW_UPDATE", async () => {
      const b = blob(bytes(4 * MiB, 7));
      const message = WriteRequest.encode({
        resourceName: `uploads/${crypto.randomUUID()}/blobs/${b.digest.hash}/${b.digest.sizeBytes}`,
        writeOffset: 0,
        finishWrite: true,
        data: Buffer.from(b.data),
      }).finish();
      const body = Buffer.alloc(5 + message.length);
      body.writeUInt32BE(message.length, 1);
      body.set(message, 5);

      const conn = await RawHttp2Connection.open(t.address);
      try {
        const stream = 1;
        const response: Buffer[] = [];
        const ended = new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error("no reply to the upload within 10 s")), 10_000);
          conn.onFrame((f) => {
            if (f.stream !== stream) return;
            if (f.type === FRAME.DATA) response.push(f.payload);
            if (f.type === FRAME.RST_STREAM) reject(new Error(`server reset the stream (code ${f.payload.readUInt32BE(0)})`));
            if ((f.flags & FLAG.END_STREAM) !== 0) {
              clearTimeout(timer);
              resolve();
            }
          });
        });
        // Everything at once, in frames of the default maximum size: only the window allows it.
        conn.send(grpcRequestHeaders(stream, WRITE_PATH));
        for (let at = 0; at < body.length; at += 16 * KiB) {
          const end = Math.min(at + 16 * KiB, body.length);
          conn.send(frame(FRAME.DATA, end === body.length ? FLAG.END_STREAM : 0, stream, body.subarray(at, end)));
        }
        await ended;
        const [reply] = grpcMessages(Buffer.concat(response));
        expect(reply).toBeDefined();
        expect(WriteResponse.decode(reply as Buffer).committedSize).toBe(4 * MiB);
        expect(await t.cas.findMissing([b.digest])).toEqual([]);
      } finally {
        conn.close();
      }
    });
  });
}
