"""Tooling around the runtime package: local stack, function runner, workload, checker,
benchmark, chaos, cluster helper and sample builder. Never shipped in an image."""
