"""refinedweb_jax: encoder-decoder Transformer, sparse attention, multi-task learning, distillation.

The notebook workflow, imported lazily (JAX and TFDS load only when used):
  refinedweb_jax.train(config, workdir), .evaluate(workdir), .predict(workdir, inputs),
  refinedweb_jax.RefinedWeb.load(workdir).translate(...)
"""

__version__ = "0.1.0"
_API = ("train", "evaluate", "predict", "RefinedWeb")


def __getattr__(name):
  if name in _API:
    from refinedweb_jax import api
    return getattr(api, name)
  raise AttributeError(f"module 'refinedweb_jax' has no attribute {name!r}")
