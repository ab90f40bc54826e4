"""README's Quick start prompts through a trained run, each marked right or wrong.

  python experiments/demo_outputs.py --workdir runs/demo

Runs the commands the Quick start shows (`refinedweb generate` with one --text per prompt,
`refinedweb generate --task ... --beam 4` on stdin, `refinedweb chat` with /reset between
questions) and prints a Markdown table: input, output, the corpus's own target, right or not.
The targets come from the corpus generator, so a row is right only when the output is the
exact string the corpus would have held.
"""

import argparse
import datetime
import subprocess
import sys

from refinedweb_jax.data import corpus
from refinedweb_jax.data.corpus import verbalize

_DATE, _JULY = datetime.date(2025, 3, 3), datetime.date(2019, 7, 14)

# (kind, prompt, target); the summarize/qa/code prompts are validation examples of the corpus.
TRANSLATIONS = (
    ("number", "translate English to German: 42", "zweiundvierzig"),
    ("number", "translate English to French: 1250", verbalize.number_words(1250, "fr")),
    ("number", "translate French to English: quatre-vingt-dix-sept", "ninety-seven"),
    ("number", "translate English to Chinese: 3600", verbalize.number_words(3600, "zh")),
    ("date", "translate English to German: Monday, March 3, 2025",
     verbalize.date_text(_DATE, "de", True)),
    ("date", "translate Chinese to English: " + verbalize.date_text(_JULY, "zh"),
     verbalize.date_text(_JULY, "en")),
    ("date", "translate German to French: " + verbalize.date_text(_JULY, "de"),
     verbalize.date_text(_JULY, "fr")),
    ("time", "translate English to French: 7:30 pm", verbalize.time_text(19, 30, "fr")),
    ("time", "translate German to Chinese: 14:15 Uhr", verbalize.time_text(14, 15, "zh")),
    ("time", "translate French to English: 9 h 45", verbalize.time_text(9, 45, "en")),
    ("quantity", "translate English to German: 21 hours", verbalize.quantity_text(21, "h", "de")),
    ("quantity", "translate French to English: 12 kilomètres",
     verbalize.quantity_text(12, "km", "en")),
    ("sentence", "translate German to English: Das schwarze Kaninchen findet jeden Tag ein Fahrrad.",
     "The black rabbit finds a bicycle every day."),
)
VALIDATION = (("summarize", 3), ("qa", 11))  # (kind, index in the validation split)
BEAM = ("translate_fr_en", "9 h 45", verbalize.time_text(9, 45, "en"))
CHAT = (("hello", "Hello! How can I help you?"), ("what is 2 plus 3?", "2 plus 3 is 5."),
        ("how do you say 42 in German?", "zweiundvierzig"))


def validation_rows() -> list:
  wanted = dict((index, kind) for kind, index in VALIDATION)
  examples = corpus.generate_split("validation", max(wanted) + 1, 0, long_fraction=0.02)
  return [(wanted[i], ex["inputs"], ex["targets"]) for i, ex in enumerate(examples)
          if i in wanted]


def run(command: list, stdin: str = "") -> list:
  done = subprocess.run(command, input=stdin, capture_output=True, text=True)
  if done.returncode:
    sys.exit(f"{' '.join(command[:3])} failed:\n{done.stderr}")
  return done.stdout.rstrip("\n").split("\n")


def outputs(workdir: str) -> list:
  """[(kind, command, prompt, output, target)] for every Quick start prompt."""
  single = list(TRANSLATIONS) + validation_rows()
  texts = [arg for _, prompt, _ in single for arg in ("--text", prompt)]
  lines = run(["refinedweb", "generate", "--workdir", workdir] + texts)
  rows = [(kind, "generate", p, o, t) for (kind, p, t), o in zip(single, lines, strict=True)]
  task, text, target = BEAM
  [beam] = run(["refinedweb", "generate", "--workdir", workdir, "--task", task, "--beam", "4"],
               text + "\n")
  rows.append(("time", f"generate --task {task} --beam 4", text, beam, target))
  said = [line for line in run(["refinedweb", "chat", "--workdir", workdir],
                               "\n/reset\n".join(q for q, _ in CHAT) + "\n")
          if line != "(conversation reset)"]
  rows += [("chat", "chat", q, o, t) for (q, t), o in zip(CHAT, said, strict=True)]
  return rows


def markdown(rows: list) -> str:
  def cell(text: str, width: int = 80) -> str:
    text = text if len(text) <= width else text[:width - 3] + "..."
    return "`" + text.replace("\n", "\\n").replace("|", "\\|") + "`"
  lines = ["| kind | input | output | right |", "|---|---|---|---|"]
  for kind, _, prompt, output, target in rows:
    verdict = "yes" if output == target else f"no ({cell(target)})"
    lines.append(f"| {kind} | {cell(prompt)} | {cell(output)} | {verdict} |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True)
  args = parser.parse_args()
  rows = outputs(args.workdir)
  print(markdown(rows))
  right = sum(output == target for *_, output, target in rows)
  print(f"\n{right} of {len(rows)} right")


if __name__ == "__main__":
  main()
