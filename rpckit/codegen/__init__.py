"""Code generation: protoc (from grpcio-tools) plus rpckit's own plugin."""

from rpckit.codegen.generator import generate_files
from rpckit.codegen.protoc import run_protoc

__all__ = ["generate_files", "run_protoc"]
