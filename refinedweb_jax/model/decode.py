"""Key/value-cached decoding inside a jitted lax.while_loop: greedy, sampling, beam search.

Every decoder step runs one token through the decoder, reading and extending the
self-attention cache; the encoder's cross-attention keys/values are projected once
when the cache is created. Rows stop at EOS; the loop stops when every row has.
"""

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp

NEG_INF = -jnp.inf
LENGTH_PENALTY_STYLES = ("t5x", "hf")


@dataclasses.dataclass(frozen=True)
class Decoding:
  """How tokens are chosen. Greedy: beam_size 1 and temperature 0.

  beam_size > 1 runs beam search; length_penalty_style "t5x" (the default) scores a
  finished beam logp / ((5 + len) / 6) ** alpha (GNMT's, as T5X), "hf" as Hugging Face's
  generate does: logp / len ** alpha, with its rules for which beams finish and when the
  search stops (beam_search), so that both give the same sequences;
  temperature > 0 samples, after keeping the top_k tokens (0 = all) and the smallest
  set whose probability reaches top_p (1 = all). Each field names its CLI flag in errors.
  """
  max_new_tokens: int = 64
  beam_size: int = 1
  length_penalty: float = 0.6
  length_penalty_style: str = "t5x"
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0
  seed: int = 0

  def __post_init__(self):
    if self.max_new_tokens < 1:
      raise ValueError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")
    if self.beam_size < 1:
      raise ValueError(f"--beam must be >= 1, got {self.beam_size}")
    if self.length_penalty < 0:
      raise ValueError(f"--length-penalty must be >= 0, got {self.length_penalty}")
    if self.length_penalty_style not in LENGTH_PENALTY_STYLES:
      raise ValueError(f"unknown --length-penalty-style {self.length_penalty_style!r}; allowed: "
                       f"{', '.join(LENGTH_PENALTY_STYLES)}")
    if self.temperature < 0:
      raise ValueError(f"--temperature must be >= 0 (0 = greedy), got {self.temperature}")
    if self.top_k < 0:
      raise ValueError(f"--top-k must be >= 0 (0 = no limit), got {self.top_k}")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"--top-p must be in (0, 1], got {self.top_p}")
    if self.beam_size > 1 and self.temperature > 0:
      raise ValueError(f"--beam {self.beam_size} and --temperature {self.temperature} "
                       "exclude each other: beam search is deterministic; use one of them")

  @property
  def method(self) -> str:
    if self.beam_size > 1:
      return "beam"
    return "sample" if self.temperature > 0 else "greedy"


def available_bytes() -> int:
  """Memory the default device can hold: its limit on accelerators, the host's RAM on CPU."""
  stats = jax.devices()[0].memory_stats() or {}
  if stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(cfg, *, rows: int, source_length: int, max_length: int, flag: str):
  """Raises naming `flag` if decoding max_length tokens for `rows` rows cannot fit in memory.

  The estimate: float32 self-attention K/V for every decoder layer over max_length
  positions, cross-attention K/V over the source, and the output buffers.
  """
  per_position = 2 * cfg.num_decoder_layers * cfg.num_heads * cfg.head_dim * 4
  need = rows * (per_position * (max_length + source_length) + 16 * max_length)
  limit = available_bytes() // 2  # the model, activations and the rest need the other half
  if need > limit:
    fits = max(1, (limit // rows - per_position * source_length) // (per_position + 16))
    raise ValueError(f"{flag}={max_length} needs ~{need / 2**30:.1f} GiB for the decoding cache "
                     f"of {rows} rows, more than half of the {2 * limit / 2**30:.1f} GiB here; "
                     f"allowed: at most {fits}")


def init_cache(model, params, enc_BxSxD, inputs_BxS, max_length: int):
  """The decoder cache: zeroed self-attention K/V of length L, encoder K/V projected once."""
  batch = inputs_BxS.shape[0]
  dummy_BxL = jnp.zeros((batch, max_length), jnp.int32)
  _, variables = model.apply({"params": params}, enc_BxSxD, inputs_BxS, dummy_BxL,
                             decode=True, method="decode", mutable=["cache"])
  return variables["cache"]


def _step(model, params, cache, enc_BxSxD, inputs_BxS, prev_B, step):
  """Runs one decoder position; returns (float32 logits_BxV, updated cache)."""
  batch = prev_B.shape[0]
  logits_Bx1xV, updated = model.apply(
      {"params": params, "cache": cache}, enc_BxSxD, inputs_BxS, prev_B[:, None],
      decoder_positions=jnp.full((batch, 1), step, jnp.int32), decode=True, method="decode",
      mutable=["cache"])
  return logits_Bx1xV[:, 0], updated["cache"]


def _token_by_token(model, params, inputs_BxS, choose, *, max_length: int, eos_id: int):
  """One token per row per step, chosen by choose(logits_BxV, step); 0 after a row's EOS."""
  enc_BxSxD = model.apply({"params": params}, inputs_BxS, method="encode")
  cache = init_cache(model, params, enc_BxSxD, inputs_BxS, max_length)
  batch = inputs_BxS.shape[0]

  def cond(carry):
    step, _, _, _, done_B = carry
    return (step < max_length) & ~jnp.all(done_B)

  def body(carry):
    step, prev_B, cache, out_BxL, done_B = carry
    logits_BxV, cache = _step(model, params, cache, enc_BxSxD, inputs_BxS, prev_B, step)
    next_B = jnp.where(done_B, 0, choose(logits_BxV, step).astype(jnp.int32))
    out_BxL = jax.lax.dynamic_update_slice_in_dim(out_BxL, next_B[:, None], step, 1)
    return step + 1, next_B, cache, out_BxL, done_B | (next_B == eos_id)

  carry = (jnp.int32(0), jnp.zeros((batch,), jnp.int32), cache,
           jnp.zeros((batch, max_length), jnp.int32), jnp.zeros((batch,), bool))
  return jax.lax.while_loop(cond, body, carry)[3]


def greedy_decode(model, params, inputs_BxS, *, max_length: int, eos_id: int):
  """Greedy decoding; returns tokens_BxL, each row padded with 0 after its EOS."""
  choose = lambda logits_BxV, step: jnp.argmax(logits_BxV, axis=-1)
  return _token_by_token(model, params, inputs_BxS, choose, max_length=max_length,
                         eos_id=eos_id)


def _ordered_keys(x_BxV):
  """int32 keys that order like the float32 values (negative floats' bits reversed)."""
  bits = jax.lax.bitcast_convert_type(x_BxV.astype(jnp.float32), jnp.int32)
  return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def _largest_key(keys_BxV, weights_BxV, target):
  """Per row, the largest key c with sum(weights[keys >= c]) >= target (exact, 32 halvings).

  Bisection over the integer keys costs 32 masked sums; lax.top_k and sorting a 32k
  vocabulary take ~25x longer on CPU.
  """
  lo_Bx1 = jnp.full(keys_BxV.shape[:1] + (1,), jnp.iinfo(jnp.int32).min, jnp.int32)
  hi_Bx1 = jnp.full_like(lo_Bx1, jnp.iinfo(jnp.int32).max)

  def halve(_, bounds):
    lo, hi = bounds
    mid = (lo >> 1) + (hi >> 1) + (lo & hi & 1)  # the midpoint without int32 overflow
    ok = jnp.sum(jnp.where(keys_BxV >= mid, weights_BxV, 0), -1, keepdims=True) >= target
    return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)
  return jax.lax.fori_loop(0, 32, halve, (lo_Bx1, hi_Bx1))[0]


def filter_logits(logits_BxV, *, top_k: int = 0, top_p: float = 1.0):
  """Sets to -inf every token outside the top_k and outside the top_p nucleus.

  The nucleus is the smallest set of most likely tokens whose probability reaches top_p:
  a token stays while the mass of the tokens above it is below top_p. Ties stay together.
  """
  keys_BxV = _ordered_keys(logits_BxV)
  if top_k > 0:
    kth_Bx1 = _largest_key(keys_BxV, jnp.ones_like(logits_BxV), top_k)
    logits_BxV = jnp.where(keys_BxV < kth_Bx1, NEG_INF, logits_BxV)
  if top_p < 1.0:
    probs_BxV = jax.nn.softmax(logits_BxV, axis=-1)
    cutoff_Bx1 = _largest_key(keys_BxV, probs_BxV, top_p)
    logits_BxV = jnp.where(keys_BxV < cutoff_Bx1, NEG_INF, logits_BxV)
  return logits_BxV


def sample_decode(model, params, inputs_BxS, rng, *, max_length: int, eos_id: int,
                  temperature: float, top_k: int = 0, top_p: float = 1.0):
  """Ancestral sampling at a temperature from the top_k / top_p filtered distribution."""
  def choose(logits_BxV, step):
    logits_BxV = filter_logits(logits_BxV / temperature, top_k=top_k, top_p=top_p)
    return jax.random.categorical(jax.random.fold_in(rng, step), logits_BxV, axis=-1)
  return _token_by_token(model, params, inputs_BxS, choose, max_length=max_length,
                         eos_id=eos_id)


def length_penalty(length, alpha: float, style: str = "t5x"):
  """GNMT's ((5 + length) / 6) ** alpha, as in T5X; "hf": Hugging Face's length ** alpha."""
  if style == "hf":
    return jnp.asarray(length, jnp.float32) ** alpha
  return ((5.0 + length) / 6.0) ** alpha


def _gather_beams(tree, parents_BxW, batch: int, beams: int):
  """Reorders the (B*W, ...) self-attention cache rows to follow the chosen beams."""
  flat = (jnp.arange(batch)[:, None] * beams + parents_BxW).reshape(-1)

  def gather(path, leaf):
    # Cross-attention K/V are the same for every beam of a row: no need to move them.
    keys = [getattr(p, "key", None) for p in path]
    if any(k in ("cached_key", "cached_value") for k in keys):
      # A scanned stack's cache has a leading layers axis before the rows.
      stacked = any("_group_" in str(k) for k in keys)
      return jnp.take(leaf, flat, axis=1 if stacked else 0)
    return leaf
  return jax.tree_util.tree_map_with_path(gather, tree)


def beam_search(model, params, inputs_BxS, *, beam_size: int, alpha: float, max_length: int,
                eos_id: int, style: str = "t5x"):
  """Beam search; returns (tokens_BxL of each row's best sequence, its score_B).

  W = beam_size beams stay live. Each step takes the best 2W one-token extensions of the
  live beams by log-probability (as T5X and Hugging Face do): those that end (EOS, or
  the length limit) join the finished set with score logp / length_penalty(length),
  and the best W of the others are the next live beams, so an EOS among the best
  extensions never shrinks the search. Beam 1 is therefore greedy decoding. The loop
  stops early once no live beam can beat a row's worst finished one (alpha >= 0 only
  lowers a live beam's best reachable score).

  style "hf" is Hugging Face's generate (early_stopping=False): penalty length ** alpha,
  only candidates among the best W of the 2W may finish, and a row closes (keeps its
  finished set) once its best live beam, scored at the current length, no longer beats
  its worst finished one: a heuristic that can stop before the best sequence is found.
  """
  hf = style == "hf"
  penalty = lambda length: length_penalty(length, alpha, style)
  batch, beams = inputs_BxS.shape[0], beam_size
  enc_BxSxD = model.apply({"params": params}, inputs_BxS, method="encode")
  enc_NxSxD = jnp.repeat(enc_BxSxD, beams, axis=0)  # N = B*W rows, beams of a row adjacent
  inputs_NxS = jnp.repeat(inputs_BxS, beams, axis=0)
  cache = init_cache(model, params, enc_NxSxD, inputs_NxS, max_length)
  best_reachable = lambda logp_BxW: jnp.max(logp_BxW, axis=-1) / penalty(max_length)

  def cond(carry):
    step, _, _, alive_logp_BxW, _, finished_score_BxW, _, open_B = carry
    if hf:
      return (step < max_length) & jnp.any(open_B)
    hopeless_B = finished_score_BxW[:, -1] >= best_reachable(alive_logp_BxW)
    return (step < max_length) & ~jnp.all(hopeless_B)

  def body(carry):
    (step, cache, alive_BxWxL, alive_logp_BxW, finished_BxWxL, finished_score_BxW, prev_BxW,
     open_B) = carry
    logits_NxV, cache = _step(model, params, cache, enc_NxSxD, inputs_NxS,
                              prev_BxW.reshape(-1), step)
    vocab = logits_NxV.shape[-1]
    logp_BxWxV = jax.nn.log_softmax(logits_NxV).reshape(batch, beams, vocab)
    candidates_BxWV = (alive_logp_BxW[..., None] + logp_BxWxV).reshape(batch, beams * vocab)
    top_logp_Bx2W, top_index_Bx2W = jax.lax.top_k(candidates_BxWV, 2 * beams)
    parent_Bx2W, token_Bx2W = top_index_Bx2W // vocab, top_index_Bx2W % vocab
    seqs_Bx2WxL = jnp.take_along_axis(alive_BxWxL, parent_Bx2W[..., None], axis=1)
    seqs_Bx2WxL = jax.lax.dynamic_update_slice_in_dim(seqs_Bx2WxL, token_Bx2W[..., None], step, 2)
    ends_Bx2W = (token_Bx2W == eos_id) | (step == max_length - 1)
    # Finished: the best W of the old finished set and the candidates ending now.
    may_finish_Bx2W = ends_Bx2W
    if hf:  # only the best W candidates, and only in rows still open
      may_finish_Bx2W &= (jnp.arange(2 * beams) < beams)[None, :] & open_B[:, None]
    ended_score_Bx2W = jnp.where(may_finish_Bx2W, top_logp_Bx2W / penalty(step + 1), NEG_INF)
    scores_Bx3W = jnp.concatenate([finished_score_BxW, ended_score_Bx2W], axis=1)
    seqs_Bx3WxL = jnp.concatenate([finished_BxWxL, seqs_Bx2WxL], axis=1)
    finished_score_BxW, keep_BxW = jax.lax.top_k(scores_Bx3W, beams)
    finished_BxWxL = jnp.take_along_axis(seqs_Bx3WxL, keep_BxW[..., None], axis=1)
    # Live: the best W candidates that did not end (candidates are sorted by logp).
    alive_logp_BxW, pick_BxW = jax.lax.top_k(jnp.where(ends_Bx2W, NEG_INF, top_logp_Bx2W), beams)
    take = lambda x_Bx2W: jnp.take_along_axis(x_Bx2W, pick_BxW, axis=1)
    alive_BxWxL = jnp.take_along_axis(seqs_Bx2WxL, pick_BxW[..., None], axis=1)
    cache = _gather_beams(cache, take(parent_Bx2W), batch, beams)
    if hf:  # the best live beam at the current length against the worst finished one
      open_B &= alive_logp_BxW[:, 0] / penalty(step + 1) > finished_score_BxW[:, -1]
    return (step + 1, cache, alive_BxWxL, alive_logp_BxW, finished_BxWxL, finished_score_BxW,
            take(token_Bx2W), open_B)

  alive_logp_BxW = jnp.tile(jnp.array([0.0] + [NEG_INF] * (beams - 1)), (batch, 1))
  zeros_BxWxL = jnp.zeros((batch, beams, max_length), jnp.int32)
  carry = (jnp.int32(0), cache, zeros_BxWxL, alive_logp_BxW, zeros_BxWxL,
           jnp.full((batch, beams), NEG_INF), jnp.zeros((batch, beams), jnp.int32),
           jnp.ones((batch,), bool))
  carry = jax.lax.while_loop(cond, body, carry)
  return carry[4][:, 0], carry[5][:, 0]


def decode(model, params, inputs_BxS, rng, *, decoding: Decoding, eos_id: int):
  """tokens_BxL by the decoding's method (greedy, sampling or beam search)."""
  length = decoding.max_new_tokens
  if decoding.method == "beam":
    return beam_search(model, params, inputs_BxS, beam_size=decoding.beam_size,
                       alpha=decoding.length_penalty, max_length=length, eos_id=eos_id,
                       style=decoding.length_penalty_style)[0]
  if decoding.method == "sample":
    return sample_decode(model, params, inputs_BxS, rng, max_length=length, eos_id=eos_id,
                         temperature=decoding.temperature, top_k=decoding.top_k,
                         top_p=decoding.top_p)
  return greedy_decode(model, params, inputs_BxS, max_length=length, eos_id=eos_id)


def make_decode_fn(model, decoding: Decoding, *, eos_id: int):
  """A jitted f(params, inputs_BxS, rng) -> tokens_BxL for one decoding setting."""
  return jax.jit(functools.partial(decode, model, decoding=decoding, eos_id=eos_id))
