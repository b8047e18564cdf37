import type * as grpc from "@grpc/grpc-js";

/** One gRPC service to mount: its generated definition and our handlers. */
export interface ServiceEntry {
  definition: grpc.ServiceDefinition;
  implementation: grpc.UntypedServiceImplementation;
}
