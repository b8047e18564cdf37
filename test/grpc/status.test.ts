import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type * as grpcTypes from "@grpc/grpc-js";
import { RpcError } from "../../src/errors";
import { PRECONDITION_FAILURE_TYPE_URL, serverStreamHandler, setErrorLogger } from "../../src/grpc/status";
import {
  type ExecuteRequest,
  ExecutionService,
  type WaitExecutionRequest,
} from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";
import type { Operation } from "../../src/proto/google/longrunning/operations";
import { PreconditionFailure } from "../../src/proto/google/rpc/error_details";
import { grpc, rpcError, statusDetails } from "../support/grpc-client";
import { type TestServer, startTestServer } from "./harness";

/**
 * How errors reach the wire: a stand-in Execution service (mounted through
 * `extraServices`, as the real one is) throws on purpose.
 */
describe("errors on the wire", () => {
  let s: TestServer;
  const logged: string[] = [];
  beforeAll(async () => {
    setErrorLogger((message) => logged.push(message));
    const implementation: grpcTypes.UntypedServiceImplementation = {
      execute: serverStreamHandler<ExecuteRequest, Operation>("Execute", async () => {
        throw RpcError.failedPrecondition("inputs are missing; upload them and retry", [
          { subject: "blobs/aaaa/1" },
          { subject: "blobs/blake3/bbbb/2" },
        ]);
      }),
      waitExecution: serverStreamHandler<WaitExecutionRequest, Operation>("WaitExecution", async () => {
        throw new TypeError("a bug in a handler");
      }),
    };
    s = await startTestServer({ extraServices: [{ definition: ExecutionService, implementation }] });
  });
  afterAll(async () => {
    setErrorLogger((message, cause) => console.error(`lre: ${message}`, cause));
    await s.stop();
  });

  test("FAILED_PRECONDITION with missing blobs carries one PreconditionFailure in grpc-status-details-bin", async () => {
    const err = await rpcError(s.clients.execute({}));
    expect(err.code).toBe(grpc.status.FAILED_PRECONDITION);
    const status = statusDetails(err);
    expect(status?.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(status?.message).toBe("inputs are missing; upload them and retry");
    expect(status?.details.map((d) => d.typeUrl)).toEqual([PRECONDITION_FAILURE_TYPE_URL]);
    const failure = PreconditionFailure.decode(status?.details[0]?.value ?? new Uint8Array());
    // Exactly the shape Bazel's retrier needs: every violation MISSING.
    expect(failure.violations.map((v) => [v.type, v.subject])).toEqual([
      ["MISSING", "blobs/aaaa/1"],
      ["MISSING", "blobs/blake3/bbbb/2"],
    ]);
  });

  test("errors without missing blobs carry no details", async () => {
    const err = await rpcError(s.clients.getActionResult({ actionDigest: { hash: "zz", sizeBytes: 1 } }));
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(statusDetails(err)).toBeUndefined();
  });

  test("an unexpected exception is INTERNAL with the cause logged, and the server keeps serving", async () => {
    const err = await rpcError(s.clients.waitExecution("op"));
    expect(err.code).toBe(grpc.status.INTERNAL);
    expect(err.details).not.toContain("a bug in a handler");
    expect(logged.some((m) => m.includes("WaitExecution"))).toBe(true);
    expect((await s.clients.getCapabilities({})).cacheCapabilities).toBeDefined();
  });
});
