"""gRPC servicers: translate messages and delegate to the runtime, nothing more."""
