import { runCli } from "./cli/run";

// process.exit, not exitCode: LMDB and gRPC may keep handles open after a
// command has finished its work, and the status is final at this point.
const status = await runCli(process.argv.slice(2));
process.exit(status);
