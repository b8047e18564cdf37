import { startExecution } from "./execution";
import { startServer } from "../grpc/server";
import { openStorage } from "../storage/open-storage";
import type { Backend } from "./contracts";

/** The real store (LMDB) and gRPC server. */
export const lreBackend: Backend = { openStorage, startServer, startExecution };
