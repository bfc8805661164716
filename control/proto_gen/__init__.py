"""Generated gRPC code; regenerate with `make proto`, never edit by hand.

Sources are in proto/; `from control.proto_gen.rtcore.v1 import control_pb2`.
"""
