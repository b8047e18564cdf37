import type { ServeConfig } from "../config/config";
import type { RunningExecution } from "./execution";
import type { Logger } from "./logger";
/** What the CLI needs from the rest of lre, as one seam so commands can be run against it. */
import type { RunningServer, ServerConfig } from "../grpc/server";
import type { Storage, StorageOptions } from "../storage/open-storage";

export type { RunningServer, ServerConfig } from "../grpc/server";
export type { Storage, StorageOptions, StorageStats } from "../storage/open-storage";

export interface Backend {
  openStorage(o: StorageOptions): Promise<Storage>;
  startServer(c: ServerConfig): Promise<RunningServer>;
  /** The Execution service for `serve` when execution is on. */
  startExecution(cfg: ServeConfig, storage: Storage, log: Logger): Promise<RunningExecution>;
}
