"""refinedweb_jax: encoder-decoder Transformer, sparse attention, multi-task learning, distillation.

The notebook workflow lives in refinedweb_jax.api (JAX and TFDS load only when used):
  from refinedweb_jax import api
  api.train(config, workdir), api.evaluate(workdir), api.predict(workdir, inputs),
  refinedweb_jax.RefinedWeb.load(workdir).translate(...)
"""

__version__ = "0.1.0"


def __getattr__(name):
  if name == "RefinedWeb":
    from refinedweb_jax import api
    return api.RefinedWeb
  raise AttributeError(f"module 'refinedweb_jax' has no attribute {name!r}")
