"""Benchmarks of scratchcnn against PyTorch; see benchmarks/README.md."""
