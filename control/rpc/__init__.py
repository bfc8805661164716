"""The gRPC API: the service the agent serves and the client rtctl uses."""
