"""Score models: the exact Gaussian-mixture oracle, the shipped digits network and its
weights, checkpoints, training, the feature classifier, the diffusers adapter and the
network-precision wrapper.

Layer 2. It may import `harness.core` and `harness.errors`; never metrics, plugins or the
benchmark.
"""
