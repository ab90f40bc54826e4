"""The public datasets the experiments read: downloaded from pinned commits, verified, laid out.

The layout is ../shared/data's (multi30k/train.en.gz, tatoeba_cmn_eng/dev.tsv, ...), one folder
per dataset with a SOURCE.txt. Each download is checked against a pinned SHA-256, and so is
each file written: the SHA-256 of its text (for .gz files, of the decompressed text).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import gzip
import hashlib
import http.client
import json
import os
import pathlib
import secrets
import shlex
import struct
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from typing import Callable, Iterable

GITHUB_RAW = "https://raw.githubusercontent.com"
ENV = "REFINEDWEB_SHARED_DATA"
# ../shared/data beside the project checkout: where the experiments look when ENV is unset.
PROJECT_SHARED = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                               "..", "..", "..", "shared", "data"))
SCHEMES = ("https", "http", "file")
TIMEOUT_S = 60


class FetchError(ValueError):
  """A dataset that cannot be fetched or is missing; the message is one line."""


@dataclasses.dataclass(frozen=True)
class Upstream:
  """A file at a pinned commit of a public GitHub repository."""

  repo: str  # owner/name
  commit: str
  path: str
  sha256: str | None = None  # of the bytes, for a derive() input; an Output has its own pins

  def url(self, base: str = GITHUB_RAW) -> str:
    return f"{base}/{self.repo}/{self.commit}/{self.path}"


@dataclasses.dataclass(frozen=True)
class Output:
  """A file of a dataset folder: the SHA-256s accepted for its text, and where it comes from."""

  name: str
  sha256: tuple
  upstream: Upstream | None = None  # None: made by the dataset's derive()


@dataclasses.dataclass(frozen=True)
class Dataset:
  """One folder: the data files the experiments read, licence files, and their origins."""

  name: str
  title: str
  licence: str
  outputs: tuple
  licence_files: tuple = ()
  inputs: tuple = ()  # the Upstream files derive() reads
  derive: Callable | None = None  # {input path: local file} -> {output name: text}
  notes: tuple = ()  # SOURCE.txt lines: how the files relate to upstream and ../shared/data


def _split_tatoeba(files: dict) -> dict:
  """dev/test: cmn.txt's lines at tatoeba_split()'s numbers; train: the rest by SHA-256."""
  with open(files["data/cmn.txt"], "rb") as f:
    lines = f.read().split(b"\n")
  if lines and not lines[-1]:
    lines.pop()
  dev, test, unused = tatoeba_split()
  held = set(dev + test + unused)
  if len(lines) <= max(held):
    raise FetchError(f"cmn.txt has {len(lines)} lines; the split needs {max(held) + 1}")
  # Sorting by content, not by a seeded shuffle of line numbers, breaks cmn.txt's
  # shortest-first order and keeps train.tsv the same whatever order the pairs came in.
  train = sorted((x for i, x in enumerate(lines) if i not in held),
                 key=lambda x: hashlib.sha256(x).digest())
  join = lambda rows: b"".join(row + b"\n" for row in rows)
  return {"train.tsv": join(train), "dev.tsv": join(lines[i] for i in dev),
          "test.tsv": join(lines[i] for i in test)}


def _convert_dialogsum(files: dict) -> dict:
  """The zip's train file has a Python dict repr a line; JSON lines like the other splits."""
  with zipfile.ZipFile(files["DialogSum_Data.zip"]) as z:
    text = z.read("DialogSum_Data/dialogsum.train.jsonl").decode("utf-8")
  # literal_eval reads literals, never code. Split on "\n" only: str.splitlines would also
  # split on characters such as U+2028 inside the dialogues.
  rows = [json.dumps(ast.literal_eval(x), ensure_ascii=False) for x in text.split("\n")
          if x.strip()]
  return {"dialogsum.train.jsonl.gz": "".join(row + "\n" for row in rows).encode("utf-8")}


_M30K = functools.partial(Upstream, "multi30k/dataset", "a3d2e0d26b56f3846f66a952536ffed4e401d05a")
_DIALOGSUM = functools.partial(Upstream, "cylnlp/dialogsum")
_XQUAD = functools.partial(Upstream, "google-deepmind/xquad",
                           "7d30520c717524000f0d9d2f9c10a069acd9d285")
_HUMANEVAL = functools.partial(Upstream, "openai/human-eval",
                               "6d43fb980f9fee3c892a914eda09951f772ad10d")
_IDENTICAL = ("Every file is the upstream file, byte for byte, as in ../shared/data.",)
_M30K_TEXT = {  # SHA-256 of the decompressed text
    "train.en.gz": "460a15fbd157e34a7a9957ee388c1ca247fe47af3ef25fb50442af6c274e0fc6",
    "train.de.gz": "2c2b73fd2b548fbcde3a875e0a78d6ee94d498bfdee6bd3eae3945779e9ddf72",
    "train.fr.gz": "5925a3c18f1587b6b54b87743106e6e8ab93618edb6f65d19eac0621f853a10d",
    "val.en.gz": "1f2a23d992769b5b3d209b0a10dd0b77c08cceb1f20dfb97ed0aafa49d107227",
    "val.de.gz": "660e09eb7e1da2f856ea13ee5ad3cf6d36b3d5b0b733c857e94c5747a3dfc660",
    "val.fr.gz": "5304e444d842e962b2dda4d816b70b22a1765b15401642b7ca37a67477e708dc",
    "test_2016_flickr.en.gz": "399a4382932c1aadd3ceb9bef1008d388a64c76d4ae4e9d4728c6f4301cac182",
    "test_2016_flickr.de.gz": "4be6b5b3236b79c25475c6bb829800a7ce559e9ba7a1f6c2394fe4d40be46d16",
    "test_2016_flickr.fr.gz": "cb3160d69b002bb638e66cc7612fcd56cb0af82eadc9c142dedc438afb885ef6",
}


DATASETS = {d.name: d for d in (
    Dataset(
        "multi30k", "Multi30k task 1 (Elliott et al., 2016, 2017): Flickr30k captions, en/de/fr",
        "non-commercial research and education only (the authors' terms; from Flickr30k)",
        tuple(Output(name, (text,), _M30K(f"data/task1/raw/{name}"))
              for name, text in _M30K_TEXT.items()), notes=_IDENTICAL),
    Dataset(
        "tatoeba_cmn_eng", "Tatoeba English-Mandarin pairs (manythings.org cmn-eng, 20,133 pairs)",
        "CC BY 2.0 FR (tatoeba.org)",
        (Output("train.tsv", ("97fe444ac4ab18b0d39c2904c9eb358288895f85b461f3cb4ddca79134668b57",
                              # ../shared/data's train.tsv: the same pairs in its seeded order.
                              "a453c1a2c6d7065d178c53b2aa3496c39e0e1deaa87bdda83b410f90fd0edc80")),
         Output("dev.tsv", ("a6a704af831eb4468b19fc8657f0eb3c3159cab1e93e1a9ed5eecf2ab99e9cd4",)),
         Output("test.tsv", ("a1f2b130556abb38a16fca114685b734523b6ae09de71fa886cf9b72b20c8c8d",))),
        inputs=(Upstream("pjgao/seq2seq_keras", "345f3ad6aa03988aa5deb9e5252de4f0c59cc0a2",
                         "data/cmn.txt",
                         "74bd3c04dfe0ec75aaaf165597b2a83c6a733d34f46b184fc21ca6b552c268d3"),),
        derive=_split_tatoeba,
        notes=("Split from cmn.txt (English<TAB>Chinese) as ../shared/data's copy was: the line",
               "numbers of its dev and test pairs, in order, and of 1,000 pairs in no split are",
               "recorded in fetch.py (tatoeba_split()). dev.tsv and test.tsv are byte-identical to",
               "../shared/data's. train.tsv holds the same 17,133 pairs, sorted by SHA-256 of the",
               "line when split here (../shared/data's order, from an unrecorded seed, is also",
               "accepted).")),
    Dataset(
        "dialogsum", "DialogSum (Chen et al., 2021): dialogues with human-written summaries",
        "CC BY-NC-SA 4.0 (non-commercial use only)",
        (Output("dialogsum.train.jsonl.gz",
                ("d223076c574192da82e8e56847b255e627196e2e7def9ed2b193cfb8e4940cba",)),
         Output("dialogsum.dev.jsonl",
                ("436721e0a3571eef7072964f80e042fb151d8c6178db1a688ce8f803bbf0a13f",),
                _DIALOGSUM("848cc8c05e0a04def79326539de827f1b28786a0",
                           "DialogSum_Data/dialogsum.dev.jsonl"))),
        inputs=(_DIALOGSUM("9a79c6b7a768020c97b44e955312dd68172c34f4", "DialogSum_Data.zip",
                           "640e43ee9a208f79618de9ce8f3dd2b56fdbb5fe81e619189fbba033254387f4"),),
        derive=_convert_dialogsum,
        notes=("dialogsum.dev.jsonl is the upstream file, byte for byte. dialogsum.train.jsonl.gz",
               "is the zip's dialogsum.train.jsonl (a Python dict repr a line; the zip was deleted",
               "upstream later) as JSON lines (ast.literal_eval, json.dumps(ensure_ascii=False)),",
               "gzipped. Its decompressed text is byte-identical to ../shared/data's.")),
    Dataset(
        "xquad", "XQuAD (Artetxe et al., 2020): SQuAD v1.1 dev subset (en) and its zh translation",
        "CC BY-SA 4.0",
        (Output("xquad.en.json",
                ("e4c57d1c9143aaa1c5d265ba5987a65f4e69528d2a98f29d6e75019b10344f29",),
                _XQUAD("xquad.en.json")),
         Output("xquad.zh.json",
                ("691d0b3359bc6b8faa8de931dfdfe21d50a65861ae348e32a0d1a0190b0c8835",),
                _XQUAD("xquad.zh.json"))),
        licence_files=(Output(
            "LICENSE-CC-BY-SA4.0.txt",
            ("25ddafc153e4cfdafd70729574ef1b44348e1814709e57680d55347038d3f92c",),
            _XQUAD("CC-BY-SA4.0.txt")),),
        notes=_IDENTICAL),
    Dataset(
        "mbpp", "MBPP sanitized (Austin et al., 2021): 427 Python problems with tests",
        "CC BY 4.0 (MBPP; the host repository's code is MIT)",
        (Output("mbpp_sanitized.jsonl",
                ("2bd0fe8c81ce55b06d993a75841ea950c25015bdd941a9696049daf6b9cb863a",),
                Upstream("mohammedEbdah/ticoder-soft-scoring",
                         "59132dcf2eaa06a12bed6f14fc4315c3cb2470d3", "data/mbpp.jsonl")),),
        notes=_IDENTICAL + ("It is google-research's mbpp/sanitized-mbpp.json as JSON lines",
                            "('prompt' renamed 'text'). Official splits by task_id: prompt",
                            "2-10, test 11-510, validation 511-600, train 601-974.")),
    Dataset(
        "humaneval", "HumanEval (Chen et al., 2021): 164 hand-written Python problems", "MIT",
        (Output("HumanEval.jsonl.gz",
                ("1d49078ba3e2b196b9344535bef34a43021f038fad9561d6ee7c53450609a6a2",),
                _HUMANEVAL("data/HumanEval.jsonl.gz")),),
        licence_files=(Output(
            "LICENSE", ("bcba3de214851cce46ed5af42d6698044616eeace887c3231bc7a20474ab639e",),
            _HUMANEVAL("LICENSE")),),
        notes=("Both files are the upstream files. HumanEval.jsonl.gz is checked on its",
               "decompressed text, which ../shared/data's copy (compressed again) shares.")),
)}
NAMES = tuple(DATASETS)


def default_out() -> str:
  """fetch()'s folder unless told: $REFINEDWEB_SHARED_DATA, else ~/.cache/refinedweb_jax/public."""
  return os.path.abspath(os.path.expanduser(os.environ.get(ENV) or
                                            "~/.cache/refinedweb_jax/public"))


def data_root() -> str:
  """The folder experiments read: $REFINEDWEB_SHARED_DATA, ../shared/data if any, default_out()."""
  if not os.environ.get(ENV) and os.path.isdir(PROJECT_SHARED):
    return PROJECT_SHARED
  return default_out()


def fetch_command(names: Iterable[str] = (), out: str | None = None) -> str:
  """The shell command fetching `names` into `out` (no --out when it is default_out())."""
  words = ["refinedweb", "fetch", *names]
  if out is not None and os.path.abspath(out) != default_out():
    words += ["--out", os.path.abspath(out)]
  return " ".join(shlex.quote(w) for w in words)


def _check_names(names: Iterable[str]) -> tuple:
  names = tuple(dict.fromkeys([names] if isinstance(names, str) else names)) or NAMES
  for name in names:
    if name not in DATASETS:
      raise FetchError(f"unknown dataset {name!r}; allowed: {', '.join(NAMES)}")
  return names


def require(name: str, root: str | None = None) -> str:
  """The folder of dataset `name` under root (default data_root()); FetchError if files lack."""
  _check_names([name])
  root = os.path.abspath(root if root is not None else data_root())
  folder = os.path.join(root, name)
  missing = [o.name for o in DATASETS[name].outputs
             if not os.path.isfile(os.path.join(folder, o.name))]
  if missing:
    raise FetchError(f"dataset {name!r} is missing from {root} (no {', '.join(missing)}): run "
                     f"`{fetch_command([name], root)}`, or set {ENV} to a folder that has it")
  return folder


def fetch(names: Iterable[str] = (), out: str | None = None, source: str | None = None,
          log: Callable[[str], None] = print) -> dict:
  """Fetches `names` (all when empty) into `out` (default_out()); returns {name: files written}.

  `source` replaces raw.githubusercontent.com: a base URL or a folder (file:// or a path) laid
  out like it (OWNER/REPO/COMMIT/PATH) or like the output (NAME/FILE). Valid files are kept.
  """
  names = _check_names(names)
  out = os.path.abspath(os.path.expanduser(out if out is not None else default_out()))
  base = _base(source)
  written = {}
  for name in names:
    dataset = DATASETS[name]
    log(f"{name}: licence: {dataset.licence}")
    written[name] = _fetch_dataset(dataset, os.path.join(out, name), base, source is not None,
                                   log)
  return written


def _base(source: str | None) -> str:
  if source is None:
    return GITHUB_RAW
  if "://" not in source:
    if not os.path.isdir(os.path.expanduser(source)):
      raise FetchError(f"--source {source!r} is neither a folder nor a URL "
                       f"({', '.join(s + '://' for s in SCHEMES)})")
    return pathlib.Path(os.path.expanduser(source)).resolve().as_uri()
  scheme = source.split("://", 1)[0].lower()
  if scheme not in SCHEMES:
    raise FetchError(f"--source {source!r}: scheme {scheme!r} is not one of {', '.join(SCHEMES)}")
  return source.rstrip("/")


def _fetch_dataset(dataset: Dataset, folder: str, base: str, mirror: bool, log) -> list:
  source_txt = os.path.join(folder, "SOURCE.txt")
  todo = [o for o in dataset.outputs + dataset.licence_files
          if not _valid(os.path.join(folder, o.name), o)]
  if not todo:
    log(f"{dataset.name}: up to date in {folder}")
    if not os.path.exists(source_txt):
      _write(source_txt, _source_txt(dataset).encode("utf-8"))
    return []
  os.makedirs(folder, exist_ok=True)
  derived = []
  for output in todo:
    dest = os.path.join(folder, output.name)
    # A mirror laid out like the output (a copy of ../shared/data, say) is tried first.
    if mirror and _place(f"{base}/{dataset.name}/{output.name}", dest, output, log,
                         missing_ok=True):
      continue
    if output.upstream is None:
      derived.append(output)
    else:
      _place(output.upstream.url(base), dest, output, log)
  if derived:
    _derive(dataset, folder, derived, base, log)
  _write(source_txt, _source_txt(dataset).encode("utf-8"))
  log(f"{dataset.name}: {len(todo)} file(s) written to {folder}")
  return [o.name for o in todo]


def _place(url: str, dest: str, output: Output, log, missing_ok: bool = False) -> bool:
  """Downloads url to dest if its checksum holds, else a FetchError; False: url is missing."""
  got = _download(url, os.path.dirname(dest), missing_ok)
  if got is None:
    return False
  tmp, digest = got
  try:
    gz = dest.endswith(".gz")
    text = _text_sha256(tmp, gz) if gz else digest
    if text not in output.sha256:
      raise _mismatch(output.name, url, output.sha256, text,
                      " of the decompressed text" if gz else "")
    os.replace(tmp, dest)
  except BaseException:
    _remove(tmp)
    raise
  log(f"  {dest} <- {url}")
  return True


def _derive(dataset: Dataset, folder: str, outputs: list, base: str, log) -> None:
  urls = [up.url(base) for up in dataset.inputs]
  with tempfile.TemporaryDirectory(prefix=".inputs-", dir=folder) as tmp:
    files = {}
    for up, url in zip(dataset.inputs, urls):
      files[up.path], digest = _download(url, tmp, False)
      if digest != up.sha256:
        raise _mismatch(os.path.basename(up.path), url, (up.sha256,), digest)
      log(f"  read {url}")
    texts = dataset.derive(files)
  for output in outputs:
    dest = os.path.join(folder, output.name)
    digest = hashlib.sha256(texts[output.name]).hexdigest()
    if digest not in output.sha256:
      raise _mismatch(output.name, "derived from " + ", ".join(urls), output.sha256, digest,
                      " of the text")
    _write(dest, texts[output.name])
    log(f"  {dest} <- derived")


def _mismatch(name: str, url: str, expected: tuple, actual: str, what: str = "") -> FetchError:
  return FetchError(f"{name}: SHA-256{what} is {actual}, expected {' or '.join(expected)} "
                    f"({url}); the file was not kept")


def _download(url: str, folder: str, missing_ok: bool) -> tuple | None:
  """(a temp file in folder with url's bytes, their SHA-256); None if missing and missing_ok."""
  tmp = os.path.join(folder, f".{os.path.basename(url)}.{secrets.token_hex(4)}.part")
  digest = hashlib.sha256()
  try:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(tmp, "xb") as f:
      for chunk in iter(lambda: response.read(1 << 20), b""):
        digest.update(chunk)
        f.write(chunk)
  except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as e:
    _remove(tmp)
    missing = (e.code in (404, 410) if isinstance(e, urllib.error.HTTPError) else
               isinstance(getattr(e, "reason", None), FileNotFoundError))
    if missing and missing_ok:
      return None
    if missing:
      raise FetchError(f"{url}: not found (no such file at the source)") from e
    raise FetchError(f"cannot download {url}: {getattr(e, 'reason', None) or e}") from e
  except BaseException:
    _remove(tmp)
    raise
  return tmp, digest.hexdigest()


def _text_sha256(path: str, gz: bool) -> str:
  """SHA-256 of a file's bytes, decompressed first when gz."""
  digest = hashlib.sha256()
  try:
    with (gzip.open if gz else open)(path, "rb") as f:
      for chunk in iter(lambda: f.read(1 << 20), b""):
        digest.update(chunk)
  except (OSError, EOFError, zlib.error):
    return "unreadable (not a complete gzip file)"
  return digest.hexdigest()


def _valid(path: str, output: Output) -> bool:
  return os.path.isfile(path) and _text_sha256(path, path.endswith(".gz")) in output.sha256


def _write(dest: str, text: bytes) -> None:
  """Writes text to dest through a temp file and a rename; .gz files are compressed."""
  if dest.endswith(".gz"):  # no name or time in the header: the same text, the same bytes
    text = gzip.compress(text, mtime=0)
  tmp = f"{dest}.{secrets.token_hex(4)}.part"
  try:
    with open(tmp, "xb") as f:
      f.write(text)
    os.replace(tmp, dest)
  except BaseException:
    _remove(tmp)
    raise


def _remove(path: str) -> None:
  try:
    os.remove(path)
  except FileNotFoundError:
    pass


def _source_txt(dataset: Dataset) -> str:
  lines = [dataset.title, f"Licence: {dataset.licence}",
           f"Fetched by `{fetch_command([dataset.name])}` (refinedweb_jax/data/fetch.py).",
           "Files, SHA-256 of the text (.gz: decompressed), origin:"]
  for o in dataset.outputs + dataset.licence_files:
    lines.append(f"  {o.name}  {o.sha256[0]}  {o.upstream.url() if o.upstream else 'derived'}")
  lines += [f"Derived from {up.url()} (SHA-256 {up.sha256})." for up in dataset.inputs]
  return "\n".join(lines + list(dataset.notes)) + "\n"


# ../shared/data's Tatoeba split, recorded because its seed was not: zlib of 2,000
# little-endian uint16 (dev then test, in file order) and 1,000 bytes (the unused lines' gaps).
TATOEBA_SPLIT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tatoeba_cmn_eng_split.bin")


def tatoeba_split() -> tuple[list, list, list]:
  """cmn.txt's line numbers (from 0) of the dev pairs, the test pairs, and those in no split."""
  with open(TATOEBA_SPLIT, "rb") as f:
    data = zlib.decompress(f.read())
  ordered = struct.unpack("<2000H", data[:4000])
  unused, at = [], 0
  for gap in data[4000:]:  # sorted, as gaps from the one before (each under 256)
    at += gap
    unused.append(at)
  return list(ordered[:1000]), list(ordered[1000:]), unused


