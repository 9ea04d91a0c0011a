"""mlp: multilayer perceptrons in JAX with backpropagation written out by hand."""
