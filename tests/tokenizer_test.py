"""SentencePiece tokenizer: exact round trips, special ids, byte fallback, saving."""

import os
import pickle

import numpy as np
import pytest

from refinedweb_jax.data import corpus
from refinedweb_jax.data import tokenizer as tokenizer_lib

SAMPLES = {
    "chinese": "今天是2021年3月5日，天气很好。",
    "german": "Größe, Übermäßig, Straße",
    "french": "Ça coûte quatre-vingt-dix-sept euros, déjà.",
    "code": "def f(x):\n    return x",
    "code_block": "class A:\n\tdef g(self, y):\n        if y:\n            return [y, 2]\n\n",
    "numbers": "3.14159 -42 1,000,000 0x1F 2021-03-05",
    "spaces": "  two leading,  two inner, trailing  ",
    "newline_edges": "\nfirst\r\n\n",
    "empty": "",
}
UNSEEN = ["😀", "Ωμέγα", "ᚠᛇᚻ", "Здравствуйте"]


def _training_texts():
  for example in corpus.generate_split("train", 3000, seed=0):
    yield example["inputs"]
    yield example["targets"]
  # Guarantees all four languages are present whatever the corpus mix is.
  yield from SAMPLES.values()


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("spm") / "spm.model")
  assert tokenizer_lib.train_tokenizer(_training_texts(), path, vocab_size=1000) == path
  return tokenizer_lib.Tokenizer(path)


def test_special_ids(tok):
  assert (tok.pad_id, tok.eos_id, tok.vocab_size) == (0, 1, 1000)
  assert tok.id_to_piece(2) == "<unk>"


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_round_trip_is_exact(tok, name):
  text = SAMPLES[name]
  ids = tok.encode(text)
  assert tok.eos_id not in ids and tok.pad_id not in ids
  assert tok.decode(ids) == text


def test_chinese_characters_are_in_the_vocabulary(tok):
  # Byte-fallback pieces are "<0x..>"; seen characters must not need them.
  pieces = [tok.id_to_piece(i) for i in tok.encode("天气")]
  assert not any(p.startswith("<0x") for p in pieces), pieces


def test_newline_and_indentation_get_own_pieces(tok):
  pieces = [tok.id_to_piece(i) for i in tok.encode(SAMPLES["code"])]
  assert "\n" in pieces and "\u2581" * 4 in pieces  # four-space indent is one piece
  assert not any(p.startswith("<0x") for p in pieces), pieces


@pytest.mark.parametrize("text", UNSEEN)
def test_unseen_characters_round_trip_via_bytes(tok, text):
  ids = tok.encode(text)
  assert tok.decode(ids) == text
  assert any(tok.id_to_piece(i).startswith("<0x") for i in ids)
  assert 2 not in ids  # never <unk>


def test_decode_stops_at_eos_and_skips_pad(tok):
  ids = tok.encode("hello world")
  assert tok.decode([0] + ids + [0, 1] + tok.encode("junk") + [0]) == "hello world"
  assert tok.decode(np.array([ids + [1, 0, 0]], dtype=np.int32)) == "hello world"
  assert tok.decode([1] + ids) == ""


def test_reload_from_proto_and_pickle(tok):
  text = SAMPLES["code_block"] + SAMPLES["chinese"]
  for other in (tokenizer_lib.Tokenizer(model_proto=tok.serialized_model_proto()),
                pickle.loads(pickle.dumps(tok))):
    assert other.encode(text) == tok.encode(text)


def test_training_writes_only_the_final_files(tok):
  out_dir = os.path.dirname(tok.model_path)
  assert sorted(os.listdir(out_dir)) == ["spm.model", "spm.vocab"]
  with open(os.path.join(out_dir, "spm.vocab"), encoding="utf-8") as f:
    lines = f.read().splitlines()
  assert len(lines) == tok.vocab_size
  assert lines[:4] == ["<pad>\t0", "</s>\t0", "<unk>\t0", "\\n\t0"]


def test_bad_arguments_are_named(tmp_path):
  with pytest.raises(ValueError, match="vocab_size"):
    tokenizer_lib.train_tokenizer(["a"], str(tmp_path / "m.model"), vocab_size=100)
  with pytest.raises(ValueError, match="vocab_size=2000 does not fit"):
    tokenizer_lib.train_tokenizer(["tiny corpus"] * 10, str(tmp_path / "m.model"), vocab_size=2000)
  with pytest.raises(TypeError, match="bytes"):
    tokenizer_lib.train_tokenizer([b"raw"], str(tmp_path / "m.model"), vocab_size=300)
  assert os.listdir(tmp_path) == []
  with pytest.raises(ValueError, match="exactly one"):
    tokenizer_lib.Tokenizer()
  with pytest.raises(FileNotFoundError, match="nope"):
    tokenizer_lib.Tokenizer(str(tmp_path / "nope.model"))


def test_prepare_builtin_is_idempotent_and_deterministic(tmp_path):
  settings = dict(num_train=300, num_validation=20, num_test=20, seed=1, vocab_size=1000)
  builder, path = tokenizer_lib.prepare_builtin(str(tmp_path / "a"), **settings)
  assert path == os.path.join(builder.data_dir, "spm_1000.model")
  mtime = os.stat(path).st_mtime_ns
  builder2, path2 = tokenizer_lib.prepare_builtin(str(tmp_path / "a"), **settings)
  assert (builder2.data_dir, path2) == (builder.data_dir, path)
  assert os.stat(path).st_mtime_ns == mtime
  _, other_path = tokenizer_lib.prepare_builtin(str(tmp_path / "b"), **settings)
  with open(path, "rb") as f, open(other_path, "rb") as g:
    assert f.read() == g.read()
  tok = tokenizer_lib.Tokenizer(path)
  assert tok.vocab_size == 1000
  assert tok.decode(tok.encode(SAMPLES["german"])) == SAMPLES["german"]
