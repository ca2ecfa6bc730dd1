"""The corral control plane: the state machine and scheduler (``core``), durable state (``store``),
the gRPC services (``rpc``) with their runtime and daemon, plus the client SDK (``sdk``) and the
``corral`` command line (``cli``)."""
