import * as grpc from "@grpc/grpc-js";
import { GrpcCode, RpcError } from "../errors";
import { PreconditionFailure } from "../proto/google/rpc/error_details";
import { Status } from "../proto/google/rpc/status";

/**
 * The one place where lre's RpcError meets grpc-js. Handlers throw RpcError
 * (or anything else); the wrappers below turn every throw into a wire status,
 * so a bug in a handler is an INTERNAL reply and a log line, never a crash.
 */

export const PRECONDITION_FAILURE_TYPE_URL = "type.googleapis.com/google.rpc.PreconditionFailure";
export const STATUS_DETAILS_KEY = "grpc-status-details-bin";

/** Where unexpected errors are reported. Replaceable so the CLI can route them into its own log. */
export type ErrorLogger = (message: string, cause: unknown) => void;

let logError: ErrorLogger = (message, cause) => {
  console.error(`lre: ${message}`, cause);
};

export function setErrorLogger(logger: ErrorLogger): void {
  logError = logger;
}

/** A google.rpc.Status for an RpcError; used in trailers and inside ExecuteResponse.status. */
export function toStatusProto(err: RpcError): Status {
  const status: Status = { code: err.code, message: err.message, details: [] };
  if (err.code === GrpcCode.FAILED_PRECONDITION && err.missing.length > 0) {
    const failure: PreconditionFailure = {
      violations: err.missing.map((m) => ({ type: "MISSING", subject: m.subject, description: "" })),
    };
    status.details.push({
      typeUrl: PRECONDITION_FAILURE_TYPE_URL,
      value: Buffer.from(PreconditionFailure.encode(failure).finish()),
    });
  }
  return status;
}

/**
 * Normalises any thrown value into an RpcError. Errors that are not RpcError
 * are bugs or environment failures: they are logged with their cause and the
 * client sees INTERNAL with the method name, not our stack.
 */
export function toRpcError(err: unknown, method: string): RpcError {
  if (err instanceof RpcError) {
    if (err.code === GrpcCode.INTERNAL) logError(`${method} failed: ${err.message}`, err.cause ?? err);
    return err;
  }
  logError(`${method} failed unexpectedly`, err);
  return RpcError.internal(`${method} failed unexpectedly; the server log has the cause`, err);
}

/** The grpc-js error object for any thrown value, with rich details in the trailer when there are any. */
export function toServiceError(err: unknown, method: string): grpc.ServerErrorResponse {
  const rpc = toRpcError(err, method);
  const metadata = new grpc.Metadata();
  const status = toStatusProto(rpc);
  if (status.details.length > 0) {
    metadata.set(STATUS_DETAILS_KEY, Buffer.from(Status.encode(status).finish()));
  }
  const out = new Error(rpc.message) as grpc.ServerErrorResponse;
  out.code = rpc.code;
  out.details = rpc.message;
  out.metadata = metadata;
  return out;
}

/** Decodes `grpc-status-details-bin` from a client-side error, for tests and tools. */
export function statusFromMetadata(metadata: grpc.Metadata | undefined): Status | undefined {
  const raw = metadata?.get(STATUS_DETAILS_KEY)[0];
  if (raw === undefined || typeof raw === "string") return undefined;
  return Status.decode(raw);
}

/** An AbortSignal that fires when the client cancels or disconnects, so handlers stop early. */
export function callSignal(call: { cancelled: boolean; once(event: "cancelled", fn: () => void): unknown }): AbortSignal {
  const controller = new AbortController();
  if (call.cancelled) controller.abort();
  else call.once("cancelled", () => controller.abort());
  return controller.signal;
}

export function unaryHandler<Req, Res>(
  method: string,
  fn: (request: Req, call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res>,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    // Promise.resolve().then keeps synchronous throws inside the same error path.
    Promise.resolve()
      .then(() => fn(call.request, call))
      .then(
        (res) => callback(null, res),
        (err: unknown) => callback(toServiceError(err, method)),
      );
  };
}

export function clientStreamHandler<Req, Res>(
  method: string,
  fn: (call: grpc.ServerReadableStream<Req, Res>) => Promise<Res>,
): grpc.handleClientStreamingCall<Req, Res> {
  return (call, callback) => {
    Promise.resolve()
      .then(() => fn(call))
      .then(
        (res) => callback(null, res),
        (err: unknown) => {
          if (call.cancelled) return;
          callback(toServiceError(err, method));
        },
      );
  };
}

export function serverStreamHandler<Req, Res>(
  method: string,
  fn: (request: Req, call: grpc.ServerWritableStream<Req, Res>) => Promise<void>,
): grpc.handleServerStreamingCall<Req, Res> {
  return (call) => {
    Promise.resolve()
      .then(() => fn(call.request, call))
      .then(
        () => {
          if (!call.cancelled) call.end();
        },
        (err: unknown) => {
          // Nobody is listening any more, and the failure is usually the cancellation itself.
          if (call.cancelled) return;
          call.emit("error", toServiceError(err, method));
        },
      );
  };
}

/** Per call: settles once the last message handed to writeMessage has been written or has failed. */
const lastWrite = new WeakMap<object, Promise<void>>();

/**
 * Writes one message to a server stream with backpressure per message: it
 * resolves once the previous message has reached the transport, so a caller
 * looping over a large blob holds at most two messages (one going out, one
 * waiting), never the blob. (grpc-js buffers up to 16 messages before write()
 * returns false, which for 1 MiB chunks is a whole 16 MiB blob per call.)
 * Rejects with CANCELLED when the client goes away meanwhile.
 */
export function writeMessage<Res>(call: grpc.ServerWritableStream<unknown, Res>, message: Res): Promise<void> {
  const previous = lastWrite.get(call) ?? Promise.resolve();
  const written = previous.then(() => sendOne(call, message));
  lastWrite.set(
    call,
    written.catch(() => undefined),
  );
  // Calls to writeMessage keep their order even when a caller does not await them.
  return previous.then(() => {
    if (call.cancelled) throw cancelledError();
  });
}

function cancelledError(): RpcError {
  return new RpcError(GrpcCode.CANCELLED, "the client cancelled the call");
}

/** Hands one message to grpc-js; settles when grpc-js has passed it to HTTP/2, or the call ended first. */
function sendOne<Res>(call: grpc.ServerWritableStream<unknown, Res>, message: Res): Promise<void> {
  if (call.cancelled) return Promise.reject(cancelledError());
  return new Promise((resolve, reject) => {
    // grpc-js never calls back for a message on a call that was cancelled or failed in between.
    const onGone = () => {
      call.off("cancelled", onGone);
      call.off("close", onGone);
      reject(cancelledError());
    };
    call.once("cancelled", onGone);
    call.once("close", onGone);
    call.write(message, (err: unknown) => {
      call.off("cancelled", onGone);
      call.off("close", onGone);
      if (err === undefined || err === null) resolve();
      else reject(err);
    });
  });
}
