"""mlp: multilayer perceptrons in JAX with backpropagation written out by hand."""

__version__ = "0.1.0"
__all__ = ["MLPClassifier", "__version__"]


def __getattr__(name: str):
  # mlp.MLPClassifier on first use: `import mlp.cli` and --help stay free of jax
  if name == "MLPClassifier":
    from mlp.estimator import MLPClassifier

    return MLPClassifier
  raise AttributeError(f"module 'mlp' has no attribute {name!r}")
