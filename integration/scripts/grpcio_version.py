#!/usr/bin/env python3
"""Calls CRI Version over a unix socket with Python's grpcio.

Usage: grpcio_version.py SOCKET [AUTHORITY]
Prints "ok <bytes>" or "error <code> <details>"; exit 0 either way, 2 on bad use.
With AUTHORITY the channel sets grpc.default_authority to it.
"""
import sys

import grpc


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    options = []
    if len(sys.argv) == 3:
        options.append(("grpc.default_authority", sys.argv[2]))
    with grpc.insecure_channel("unix://" + sys.argv[1], options=options) as channel:
        version = channel.unary_unary(
            "/runtime.v1.RuntimeService/Version",
            request_serializer=None,
            response_deserializer=None,
        )
        try:
            # VersionRequest{version: "v1"}
            reply = version(b"\x0a\x02v1", timeout=10)
            print("ok", len(reply))
        except grpc.RpcError as err:
            print("error", err.code().name, err.details())
    return 0


if __name__ == "__main__":
    sys.exit(main())
