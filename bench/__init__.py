"""tapevault's benchmark harness: ``python -m bench [--quick | --smoke]``; see BENCHMARKS.md."""
