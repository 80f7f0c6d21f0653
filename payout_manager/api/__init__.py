"""The gRPC face of the service: servicers, the error mapping, and the server."""
