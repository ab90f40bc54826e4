"""`refinedweb import-hf DIR --workdir W` and `refinedweb export-hf --workdir W --out DIR`.

Import writes a run directory: a step-0 checkpoint (the T5's parameters, a fresh
optimizer state, the run config with the T5's model section and its spiece.model
as the run's tokenizer), which `generate`, `chat`, `eval`, `distill dump --teacher W`,
`RefinedWeb.load` and `train --workdir NEW --config.train.init_from=W` start from
(`train --workdir W` itself says to fine-tune into a new workdir). Export writes config.json, model.safetensors and spiece.model
that transformers' T5ForConditionalGeneration.from_pretrained loads. Both write
into a temporary sibling and rename it at the end: a failure leaves nothing behind.
"""

import contextlib
import json
import os
import shutil
import sys
import tempfile

import jax
import numpy as np

from refinedweb_jax import backend, configs, sharding
from refinedweb_jax.convert import hf_t5
from refinedweb_jax.data import tokenizer as tok
from refinedweb_jax.model import scan
from refinedweb_jax.model.transformer import EncoderDecoder, flat_params
from refinedweb_jax.train import checkpoint, optim, resume, setup, step as step_lib

# T5's fine-tuning lengths; change them with --config.data.* when training.
INPUT_LENGTH, TARGET_LENGTH = 512, 128


def _check_new(target: str, what: str):
  """Raises unless `target` is a new or empty directory."""
  target = os.path.abspath(target)
  if os.path.exists(target) and (not os.path.isdir(target) or os.listdir(target)):
    raise ValueError(f"{what} {target!r} already exists and is not empty; choose a new one")


@contextlib.contextmanager
def _staged(target: str, what: str):
  """A temporary directory beside `target`, renamed to it when the block succeeds."""
  _check_new(target, what)
  target = os.path.abspath(target)
  parent = os.path.dirname(target)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.partial-", dir=parent)
  try:
    yield staging
    if os.path.isdir(target):
      os.rmdir(target)  # empty (checked above)
    os.rename(staging, target)
  finally:
    shutil.rmtree(staging, ignore_errors=True)


def import_hf(model_dir: str, workdir: str, config=None):
  """Converts a Hugging Face T5-family directory into a run directory; returns its config."""
  _check_new(workdir, "--workdir")
  hf = hf_t5.read_config(model_dir)
  fields = hf_t5.model_fields(hf)
  spiece = os.path.join(model_dir, "spiece.model")
  if not os.path.isfile(spiece):
    raise FileNotFoundError(f"no spiece.model in {model_dir!r}: the SentencePiece model of this T5 "
                            "(save it beside the weights, e.g. tokenizer.save_pretrained(DIR))")
  tokenizer = tok.Tokenizer(spiece)
  hf_t5.check_tokenizer(tokenizer.vocab_size, fields["vocab_size"], spiece)
  weights = hf_t5.Weights(model_dir)
  workdir = os.path.abspath(workdir)
  # A fresh copy of the settled config: the imported model's section replaces its own.
  config = configs.default_config() if config is None else configs.from_saved(
      configs.to_dict(config))
  config.model.preset = "custom"  # every size below is the T5's own
  config.model.update(fields)
  if config.model.get("scan_layers") is None:  # the layout written below, said outright
    config.model.scan_layers = backend.auto_scan_layers()
  config.data.update(dict(tokenizer=os.path.join(workdir, "spiece.model"),
                          vocab_size=tokenizer.vocab_size, input_length=INPUT_LENGTH,
                          target_length=TARGET_LENGTH))
  configs.validate(config)
  model_cfg = configs.model_config(config, vocab_size=tokenizer.vocab_size)
  model = EncoderDecoder(model_cfg)
  mesh = setup.make_mesh(config)
  sharding.check_model_fits(model_cfg, dict(mesh.shape))
  tx, _ = optim.make_optimizer(config.optimizer, config.train.num_steps)
  d = config.data
  abstract, shardings = step_lib.abstract_train_state(
      model, tx, mesh, input_length=d.input_length, target_length=d.target_length)
  spec = flat_params(abstract.params)
  # The T5 names are per layer: map the unrolled layout, then stack a scanned model's layers.
  unrolled = scan.to_unrolled(spec, model_cfg) if model_cfg.scan_layers else spec
  names = hf_t5.checked_name_map(model_cfg, unrolled)
  values = {path: hf_t5.to_param(weights, names[path], path, leaf.shape, hf)
            for path, leaf in unrolled.items()}
  if model_cfg.scan_layers:
    values = scan.to_scanned(values, model_cfg)
  placed = [_place(values[path], leaf.sharding) for path, leaf in spec.items()]
  params = jax.tree.unflatten(jax.tree.structure(abstract.params), placed)
  state = sharding.jit(lambda p: step_lib.TrainState.create(apply_fn=model.apply, params=p, tx=tx),
                       mesh, out_shardings=shardings)(params)
  with _staged(workdir, "--workdir") as staging:
    shutil.copyfile(spiece, os.path.join(staging, "spiece.model"))
    with open(os.path.join(staging, checkpoint.IMPORTED), "w") as f:
      json.dump({"model_dir": os.path.abspath(model_dir), "config": hf}, f, indent=1)
    resume.write_config(staging, config)  # `refinedweb config --workdir` shows the T5's model
    ckpt = checkpoint.Checkpointer(os.path.join(staging, "checkpoints"), async_save=False)
    try:
      ckpt.save(0, state, config=checkpoint.config_to_json(config),
                tokenizer_proto=tokenizer.serialized_model_proto(), force=True,
                fingerprint=resume.fingerprint(config))
    finally:
      ckpt.close()
  return config


def _place(value: np.ndarray, target_sharding):
  """A host array straight into its sharding: each device reads only its own slice."""
  return jax.make_array_from_callback(value.shape, target_sharding, lambda index: value[index])


def export_hf(workdir: str, out_dir: str) -> str:
  """Writes a run's newest checkpoint as a Hugging Face T5 directory; returns out_dir."""
  _check_new(out_dir, "--out")
  trained = setup.restore(workdir)
  cfg = trained.run.model_cfg
  if cfg.position != "t5_bias":
    raise ValueError(f"{workdir} has model.position={cfg.position!r}: a Hugging Face T5 has T5's "
                     "relative position bias, so only model.position='t5_bias' models export "
                     "(import a T5 with import-hf, or train with --config.model.position=t5_bias)")
  hf_config = hf_t5.hf_config(cfg)
  sparse = sorted({cfg.attention_kind(stack, i) for stack in ("encoder", "decoder")
                   for i in range(getattr(cfg, f"num_{stack}_layers"))} - {"dense"})
  if sparse:
    print(f"refinedweb: warning: {workdir} uses {', '.join(sparse)} attention; a Hugging Face T5 "
          "attends densely, which differs on inputs longer than the sparse pattern reaches",
          file=sys.stderr)
  params = {k: np.asarray(jax.device_get(v)) for k, v in flat_params(trained.params).items()}
  weights = hf_t5.from_params(params, cfg)
  from safetensors.numpy import save_file
  with _staged(out_dir, "--out") as staging:
    with open(os.path.join(staging, "config.json"), "w") as f:
      json.dump(hf_config, f, indent=1)
    save_file(weights, os.path.join(staging, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(staging, "spiece.model"), "wb") as f:
      f.write(trained.run.tokenizer.serialized_model_proto())
  return out_dir
