"""Key/value-cached decoding inside a jitted lax.while_loop: greedy, sampling, beam search.

Every decoder step runs one token through the decoder, writing its keys/values into the
self-attention cache at its position only; the encoder's cross-attention keys/values
are projected once, one row per example, when the cache is created. The decoder runs
layer by layer (a scanned stack's parameters are sliced per layer), so every layer's
cache is its own loop-carried buffer, updated in place. The loop runs in phases of
cache_spans' lengths: phase p attends over the cache's first spans[p] positions, so
attention covers the positions decoded so far, rounded up to a block. Rows stop at EOS;
the loop stops when every row has, a condition tested every `check_every` steps
(CHECK_EVERY: per backend).
"""

import dataclasses
import functools
import math
import os

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp

from refinedweb_jax.model import quantize, scan
from refinedweb_jax.model.attention import kinds

NEG_INF = -jnp.inf
LENGTH_PENALTY_STYLES = ("t5x", "hf")
# Steps between two tests of the stop condition. XLA:GPU copies a while_loop's predicate
# to the host every iteration, so no step is launched before the last one ends; CPU reads
# it in place and TPU branches on the chip, where chunks would only add masked steps
# past the stop (at most check_every - 1: under 1/8 of a 64-token decode at 8).
CHECK_EVERY = {"cpu": 1, "gpu": 8, "tpu": 1}
# Sampling cutoffs: "bisection" (32 masked sums over the vocabulary; on CPU ~25x faster
# than lax.top_k or a sort of 32k) or "top_k" (candidates by lax.top_k or a sort, then a
# few of the same sums). lax.approx_max_k would be faster on TPU but can miss tokens.
CUTOFF_SEARCH = {"cpu": "bisection", "gpu": "top_k", "tpu": "top_k"}
CUTOFF_SEARCHES = ("bisection", "top_k")
# The self-attention cache grows by blocks of at least CACHE_BLOCK positions, in at most
# MAX_CACHE_PHASES phases: each phase is one more compiled decoder step, so few and long.
CACHE_BLOCK = 64
MAX_CACHE_PHASES = 8
SELF_CACHE = ("cached_key", "cached_value")


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
    for name, flag in (("length_penalty", "--length-penalty"), ("temperature", "--temperature"),
                       ("top_p", "--top-p")):
      if not math.isfinite(getattr(self, name)):
        raise ValueError(f"{flag} must be a finite number, got {getattr(self, name)}")
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
  """Memory one of this process's devices can hold: its limit on accelerators, the host's
  RAM on CPU. (Another process's devices cannot be asked: their stats are theirs.)"""
  stats = jax.local_devices()[0].memory_stats() or {}
  if stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(cfg, *, rows: int, source_length: int, max_length: int, flag: str):
  """Raises naming `flag` if decoding max_length tokens for `rows` rows cannot fit in memory.

  The estimate: self-attention K/V (in the compute dtype) for every decoder layer over
  max_length positions, cross-attention K/V over the source, and the output buffers.
  """
  per_position = (2 * cfg.num_decoder_layers * cfg.num_heads * cfg.head_dim
                  * jnp.dtype(cfg.compute_dtype).itemsize)
  need = rows * (per_position * (max_length + source_length) + 16 * max_length)
  limit = available_bytes() // 2  # the model, activations and the rest need the other half
  if need > limit:
    fits = max(1, (limit // rows - per_position * source_length) // (per_position + 16))
    raise ValueError(f"{flag}={max_length} needs ~{need / 2**30:.1f} GiB for the decoding cache "
                     f"of {rows} rows, more than half of the {2 * limit / 2**30:.1f} GiB here; "
                     f"allowed: at most {fits}")


def inference_params(params, cfg, platform: str | None = None):
  """params for decoding: on GPU/TPU, float32 kernels and embeddings cast once to a 16-bit
  cfg.compute_dtype (bfloat16); on CPU, for a float32 model or int8 weights, unchanged.

  The model casts exactly these to the compute dtype at every use, so no output changes
  and a step reads half the bytes. Norm scales and T5's bias tables stay float32: the
  model applies them in float32, where a bfloat16 copy would round them.
  """
  dtype = jnp.dtype(cfg.compute_dtype)
  if ((platform or jax.default_backend()) == "cpu" or dtype.itemsize != 2
      or quantize.is_quantized(params)):
    return params

  def cast(path, leaf):
    names = [p.key for p in path if isinstance(p, jax.tree_util.DictKey)]
    if names[-1:] in (["kernel"], ["embedding"]) and leaf.dtype == jnp.float32:
      return leaf.astype(dtype)  # eager: each array keeps its sharding
    return leaf
  return jax.tree_util.tree_map_with_path(cast, params)


def resolve_check_every(check_every: int | None = None) -> int:
  """check_every, or CHECK_EVERY for the backend being traced for (default 1)."""
  if check_every is None:
    return CHECK_EVERY.get(jax.default_backend(), 1)
  if not isinstance(check_every, int) or check_every < 1:
    raise ValueError(f"check_every must be an int >= 1, got {check_every!r}")
  return check_every


def _while(cond, body, state, cache, check_every: int):
  """(state, cache) of lax.while_loop(cond, body), cond(state) tested by the loop every
  check_every steps: a step taken once it fails keeps the state (so it keeps failing) and
  writes the cache only at the step's own position, never read again (_phases). The
  state is check_every=1's."""
  if check_every == 1:
    return jax.lax.while_loop(lambda c: cond(c[0]), lambda c: body(*c), (state, cache))

  def masked_step(_, carry):
    state, cache = carry
    new_state, cache = body(state, cache)
    live = cond(state)
    return jax.tree.map(lambda new, old: jnp.where(live, new, old), new_state, state), cache

  chunk = lambda carry: jax.lax.fori_loop(0, check_every, masked_step, carry)
  return jax.lax.while_loop(lambda c: cond(c[0]), chunk, (state, cache))


def cache_spans(cfg, max_length: int, check_every: int) -> tuple:
  """The cache's length in each phase of a decode: multiples of a block (at least
  CACHE_BLOCK, a multiple of check_every, at most MAX_CACHE_PHASES of them), then max_length.

  A phase ends on a multiple of check_every, so no masked step of _while writes past
  its phase's cache.
  """
  # A kind whose pattern for a position depends on the whole length (Kind.length_dependent:
  # BigBird's random blocks are drawn per length) keeps the full length from the start.
  if any(kinds.length_dependent(cfg.attention_kind("decoder", i))
         for i in range(cfg.num_decoder_layers)):
    return (max_length,)
  block = max(CACHE_BLOCK, -(-max_length // MAX_CACHE_PHASES))
  block = -(-block // check_every) * check_every
  return tuple(range(block, max_length, block)) + (max_length,)


def _phases(cond, body, state, cache, check_every: int, spans: tuple):
  """_while phase by phase: phase p runs while step < spans[p] over a cache of spans[p]
  positions, grown by zeros between phases (state[0] is the step)."""
  for end in spans:
    cache = _grow(cache, end)
    state, cache = _while(lambda s, end=end: cond(s) & (s[0] < end), body, state, cache,
                          check_every)
  return state


def _grow(cache, length: int):
  """The self-attention cache (BxHxLxK) padded with zeros to `length` positions."""
  def grow(path, leaf):
    if _is_self_cache(path) and leaf.shape[2] < length:
      return jnp.pad(leaf, [(0, 0), (0, 0), (0, length - leaf.shape[2]), (0, 0)])
    return leaf
  return jax.tree_util.tree_map_with_path(grow, cache)


def _is_self_cache(path) -> bool:
  return any(getattr(p, "key", None) in SELF_CACHE for p in path)


def layer_by_layer(model, params):
  """(model, params) whose decoder runs one layer after another: as given when unrolled;
  for scanned stacks, the same model unrolled with each layer's parameters sliced out.

  A scan over the layers would read every layer's cache and write it whole again each
  step; unrolled, each layer's cache is its own buffer, written at one position.
  """
  if not model.cfg.scan_layers:
    return model, params
  flat = traverse_util.flatten_dict(nn.meta.unbox(params))
  unrolled = scan.to_unrolled(flat, model.cfg)
  return (model.clone(cfg=dataclasses.replace(model.cfg, scan_layers=False)),
          traverse_util.unflatten_dict(unrolled))


def init_cache(model, params, enc_BxSxD, inputs_BxS, max_length: int, beams: int = 1):
  """The decoder cache: zeroed self-attention K/V of length L for B * beams rows (beams of
  an example adjacent), the encoder's K/V projected once per example."""
  rows = inputs_BxS.shape[0] * beams
  dummy_NxL = jnp.zeros((rows, max_length), jnp.int32)
  _, variables = model.apply({"params": params}, enc_BxSxD, inputs_BxS, dummy_NxL,
                             decode=True, method="decode", mutable=["cache"])
  return variables["cache"]


def _step(model, params, cache, enc_BxSxD, inputs_BxS, prev_N, step):
  """Runs one decoder position for N = B * beams rows; returns (float32 logits_NxV, cache)."""
  rows = prev_N.shape[0]
  logits_Nx1xV, updated = model.apply(
      {"params": params, "cache": cache}, enc_BxSxD, inputs_BxS, prev_N[:, None],
      decoder_positions=jnp.full((rows, 1), step, jnp.int32), decode=True, method="decode",
      mutable=["cache"])
  return logits_Nx1xV[:, 0], updated["cache"]


def _token_by_token(model, params, inputs_BxS, choose, *, max_length: int, eos_id: int,
                    check_every: int | None = None):
  """One token per row per step, chosen by choose(logits_BxV, step); 0 after a row's EOS."""
  enc_BxSxD = model.apply({"params": params}, inputs_BxS, method="encode")
  check_every = resolve_check_every(check_every)
  spans = cache_spans(model.cfg, max_length, check_every)
  model, params = layer_by_layer(model, params)
  cache = init_cache(model, params, enc_BxSxD, inputs_BxS, spans[0])
  batch = inputs_BxS.shape[0]

  def cond(state):
    step, _, _, done_B = state
    return (step < max_length) & ~jnp.all(done_B)

  def body(state, cache):
    step, prev_B, out_BxL, done_B = state
    logits_BxV, cache = _step(model, params, cache, enc_BxSxD, inputs_BxS, prev_B, step)
    next_B = jnp.where(done_B, 0, choose(logits_BxV, step).astype(jnp.int32))
    out_BxL = jax.lax.dynamic_update_slice_in_dim(out_BxL, next_B[:, None], step, 1)
    return (step + 1, next_B, out_BxL, done_B | (next_B == eos_id)), cache

  zeros_B = jnp.zeros((batch,), jnp.int32)
  state = (jnp.int32(0), zeros_B, jnp.zeros((batch, max_length), jnp.int32), zeros_B == 1)
  return _phases(cond, body, state, cache, check_every, spans)[2]


def greedy_decode(model, params, inputs_BxS, *, max_length: int, eos_id: int,
                  check_every: int | None = None):
  """Greedy decoding; returns tokens_BxL, each row padded with 0 after its EOS."""
  choose = lambda logits_BxV, step: jnp.argmax(logits_BxV, axis=-1)
  return _token_by_token(model, params, inputs_BxS, choose, max_length=max_length,
                         eos_id=eos_id, check_every=check_every)


def _ordered_keys(x_BxV):
  """int32 keys that order like the float32 values (negative floats' bits reversed)."""
  bits = jax.lax.bitcast_convert_type(x_BxV.astype(jnp.float32), jnp.int32)
  return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def _mass(keys_BxV, weights_BxV, key_Bx1):
  """sum(weights[keys >= key]) per row: the one sum both cutoff searches test."""
  return jnp.sum(jnp.where(keys_BxV >= key_Bx1, weights_BxV, 0), -1, keepdims=True)


def _largest_key(keys_BxV, weights_BxV, target):
  """Per row, the largest key c with sum(weights[keys >= c]) >= target (exact, 32 halvings)."""
  lo_Bx1 = jnp.full(keys_BxV.shape[:1] + (1,), jnp.iinfo(jnp.int32).min, jnp.int32)
  hi_Bx1 = jnp.full_like(lo_Bx1, jnp.iinfo(jnp.int32).max)

  def halve(_, bounds):
    lo, hi = bounds
    mid = (lo >> 1) + (hi >> 1) + (lo & hi & 1)  # the midpoint without int32 overflow
    ok = _mass(keys_BxV, weights_BxV, mid) >= target
    return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)
  return jax.lax.fori_loop(0, 32, halve, (lo_Bx1, hi_Bx1))[0]


def _largest_candidate(keys_BxV, weights_BxV, target, candidates_BxJ):
  """_largest_key's answer when it is one of candidates_BxJ (keys, largest first), else
  int32 min: a binary search over them with the same sums, ceil(log2(J + 1)) of them.

  The sum grows as the key falls, so the first candidate that reaches the target is the
  largest such key; every key from it up to the next candidate has the same sum.
  """
  count = candidates_BxJ.shape[1]
  lo_Bx1 = jnp.zeros(candidates_BxJ.shape[:1] + (1,), jnp.int32)
  hi_Bx1 = jnp.full_like(lo_Bx1, count)  # the first index reaching it is in [lo, hi]; J: none
  at = lambda i_Bx1: jnp.take_along_axis(candidates_BxJ, jnp.minimum(i_Bx1, count - 1), 1)
  for _ in range(count.bit_length()):
    mid_Bx1 = (lo_Bx1 + hi_Bx1) // 2
    ok = (mid_Bx1 < count) & (_mass(keys_BxV, weights_BxV, at(mid_Bx1)) >= target)
    lo_Bx1, hi_Bx1 = jnp.where(ok, lo_Bx1, mid_Bx1 + 1), jnp.where(ok, mid_Bx1, hi_Bx1)
  return jnp.where(lo_Bx1 < count, at(lo_Bx1), jnp.iinfo(jnp.int32).min)


def filter_logits(logits_BxV, *, top_k: int = 0, top_p: float = 1.0, search: str | None = None):
  """Sets to -inf every token outside the top_k and outside the top_p nucleus.

  The nucleus is the smallest set of most likely tokens whose probability reaches top_p:
  a token stays while the mass of the tokens above it is below top_p. Ties stay together.
  search: "bisection" or "top_k" (default: CUTOFF_SEARCH for the backend), which keep
  the same tokens; "top_k" searches top_p's cutoff among the top_k tokens, or all of them
  sorted when top_k is unset.
  """
  search = search or CUTOFF_SEARCH.get(jax.default_backend(), "top_k")
  if search not in CUTOFF_SEARCHES:
    raise ValueError(f"unknown cutoff search {search!r}; allowed: {', '.join(CUTOFF_SEARCHES)}")
  keys_BxV = _ordered_keys(logits_BxV)
  vocab = logits_BxV.shape[-1]
  candidates_BxJ = None
  if 0 < top_k < vocab:  # a top_k of the whole vocabulary or more keeps every token
    if search == "bisection":
      kth_Bx1 = _largest_key(keys_BxV, jnp.ones_like(logits_BxV), top_k)
    else:
      candidates_BxJ = jax.lax.top_k(keys_BxV, top_k)[0]
      kth_Bx1 = candidates_BxJ[:, -1:]
    logits_BxV = jnp.where(keys_BxV < kth_Bx1, NEG_INF, logits_BxV)
  if top_p < 1.0:
    probs_BxV = jax.nn.softmax(logits_BxV, axis=-1)
    if search == "bisection":
      cutoff_Bx1 = _largest_key(keys_BxV, probs_BxV, top_p)
    else:
      # Outside the top_k every probability is 0: the cutoff is a candidate or none.
      if candidates_BxJ is None:
        candidates_BxJ = jnp.flip(jnp.sort(keys_BxV, axis=-1), axis=-1)
      cutoff_Bx1 = _largest_candidate(keys_BxV, probs_BxV, top_p, candidates_BxJ)
    logits_BxV = jnp.where(keys_BxV < cutoff_Bx1, NEG_INF, logits_BxV)
  return logits_BxV


def sample_decode(model, params, inputs_BxS, rng, *, max_length: int, eos_id: int,
                  temperature: float, top_k: int = 0, top_p: float = 1.0,
                  check_every: int | None = None):
  """Ancestral sampling at a temperature from the top_k / top_p filtered distribution."""
  def choose(logits_BxV, step):
    logits_BxV = filter_logits(logits_BxV / temperature, top_k=top_k, top_p=top_p)
    return jax.random.categorical(jax.random.fold_in(rng, step), logits_BxV, axis=-1)
  return _token_by_token(model, params, inputs_BxS, choose, max_length=max_length,
                         eos_id=eos_id, check_every=check_every)


def length_penalty(length, alpha: float, style: str = "t5x"):
  """GNMT's ((5 + length) / 6) ** alpha, as in T5X; "hf": Hugging Face's length ** alpha."""
  if style == "hf":
    return jnp.asarray(length, jnp.float32) ** alpha
  return ((5.0 + length) / 6.0) ** alpha


def _reorder_beams(cache, parents_BxW, batch: int, beams: int):
  """The (B*W, ...) self-attention cache rows gathered to follow the chosen beams, or
  left in place when every beam continues its own parent.

  The gather sits in a loop of zero or one trip: unlike lax.cond, whose untaken identity
  branch XLA copies (and copies again into the loop's carry), a loop that is skipped
  leaves the buffers where they are. Cross-attention K/V hold one row per example,
  shared by its beams: never moved.
  """
  leaves, tree = jax.tree_util.tree_flatten_with_path(cache)
  at = [i for i, (path, _) in enumerate(leaves) if _is_self_cache(path)]
  flat = (jnp.arange(batch)[:, None] * beams + parents_BxW).reshape(-1)
  gather = lambda carry: (False, [jnp.take(x, flat, axis=0) for x in carry[1]])
  moved = ~jnp.all(parents_BxW == jnp.arange(beams))
  values = [leaf for _, leaf in leaves]
  reordered = jax.lax.while_loop(lambda carry: carry[0], gather,
                                 (moved, [values[i] for i in at]))[1]
  for i, x in zip(at, reordered):
    values[i] = x
  return jax.tree_util.tree_unflatten(tree, values)


def beam_search(model, params, inputs_BxS, *, beam_size: int, alpha: float, max_length: int,
                eos_id: int, style: str = "t5x", check_every: int | None = None):
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
  check_every = resolve_check_every(check_every)
  spans = cache_spans(model.cfg, max_length, check_every)
  model, params = layer_by_layer(model, params)
  # N = B*W decoder rows (beams of an example adjacent); the encoder side stays B rows.
  cache = init_cache(model, params, enc_BxSxD, inputs_BxS, spans[0], beams)
  best_reachable = lambda logp_BxW: jnp.max(logp_BxW, axis=-1) / penalty(max_length)

  def cond(state):
    step, _, alive_logp_BxW, _, finished_score_BxW, _, open_B = state
    if hf:
      return (step < max_length) & jnp.any(open_B)
    hopeless_B = finished_score_BxW[:, -1] >= best_reachable(alive_logp_BxW)
    return (step < max_length) & ~jnp.all(hopeless_B)

  def body(state, cache):
    (step, alive_BxWxL, alive_logp_BxW, finished_BxWxL, finished_score_BxW, prev_BxW,
     open_B) = state
    logits_NxV, cache = _step(model, params, cache, enc_BxSxD, inputs_BxS,
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
    cache = _reorder_beams(cache, take(parent_Bx2W), batch, beams)
    if hf:  # the best live beam at the current length against the worst finished one
      open_B &= alive_logp_BxW[:, 0] / penalty(step + 1) > finished_score_BxW[:, -1]
    return (step + 1, alive_BxWxL, alive_logp_BxW, finished_BxWxL, finished_score_BxW,
            take(token_Bx2W), open_B), cache

  alive_logp_BxW = jnp.tile(jnp.array([0.0] + [NEG_INF] * (beams - 1)), (batch, 1))
  zeros_BxWxL = jnp.zeros((batch, beams, max_length), jnp.int32)
  state = (jnp.int32(0), zeros_BxWxL, alive_logp_BxW, zeros_BxWxL,
           jnp.full((batch, beams), NEG_INF), jnp.zeros((batch, beams), jnp.int32),
           jnp.ones((batch,), bool))
  state = _phases(cond, body, state, cache, check_every, spans)
  return state[3][:, 0], state[4][:, 0]


def decode(model, params, inputs_BxS, rng, *, decoding: Decoding, eos_id: int,
           check_every: int | None = None):
  """tokens_BxL by the decoding's method (greedy, sampling or beam search)."""
  length = decoding.max_new_tokens
  if decoding.method == "beam":
    return beam_search(model, params, inputs_BxS, beam_size=decoding.beam_size,
                       alpha=decoding.length_penalty, max_length=length, eos_id=eos_id,
                       style=decoding.length_penalty_style, check_every=check_every)[0]
  if decoding.method == "sample":
    return sample_decode(model, params, inputs_BxS, rng, max_length=length, eos_id=eos_id,
                         temperature=decoding.temperature, top_k=decoding.top_k,
                         top_p=decoding.top_p, check_every=check_every)
  return greedy_decode(model, params, inputs_BxS, max_length=length, eos_id=eos_id,
                       check_every=check_every)


def make_decode_fn(model, decoding: Decoding, *, eos_id: int, check_every: int | None = None):
  """A jitted f(params, inputs_BxS, rng) -> tokens_BxL for one decoding setting.

  check_every: steps between tests of the stop condition (default: CHECK_EVERY for the
  backend); the tokens are the same for every value.
  """
  return jax.jit(functools.partial(decode, model, decoding=decoding, eos_id=eos_id,
                                   check_every=check_every))
