"""Regenerate src/ner_retriever/data/sample.jsonl from the Few-NERD INTER test split.

The sample gives the CLI and the tests a small, real, redistributable corpus (CC BY-SA 4.0)
without depending on ../shared/data at run time. Run from the repository root:

    python scripts/make_sample.py
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # the script must run before the package is installed

from ner_retriever.io.corpus import read_conll  # noqa: E402

SOURCE = ROOT.parent / "shared" / "data" / "fewnerd" / "inter_bio_structshot" / "big_test.txt"
TARGET = ROOT / "src" / "ner_retriever" / "data" / "sample.jsonl"
SIZE = 300
SEED = 0
MIN_TOKENS, MAX_TOKENS = 8, 60

NO_SPACE_BEFORE = {",", ".", ";", ":", ")", "]", "!", "?", "%", "”", "’",
                   "'s", "'S", "n't", "'re", "'m", "'d", "'ve", "'ll"}
NO_SPACE_AFTER = {"(", "[", "“", "‘"}
QUOTES = {"``", "''", '"'}


def detokenize(tokens: list[str]) -> str:
    """Undo Penn-style tokenisation so the sample reads like ordinary text.

    Few-NERD often writes both double quotes as ````, so quotes alternate open/close; when a
    sentence has an odd number of them the pairing is unknown and they stay spaced. A lone
    ``'`` after a word ending in "s" is a plural possessive ("teams' championship"). The
    source also splits the HTML entity ``&amp;`` into ``& amp ;``.
    """
    tokens = " ".join(tokens).replace("& amp ;", "&").split(" ")
    pair_quotes = sum(token in QUOTES for token in tokens) % 2 == 0
    out = ""
    glue_next = True  # no space before the first token
    quote_open = False
    previous = ""
    for token in tokens:
        if token in QUOTES:
            token = '"'
            if pair_quotes:
                out += '"' if quote_open or glue_next else ' "'
                glue_next = not quote_open
                quote_open = not quote_open
                previous = token
                continue
        glue = (
            token in NO_SPACE_BEFORE
            or (token == "'" and previous.endswith(("s", "S")))
            or (token == "s" and previous in ("'", "’"))
        )
        if not glue_next and not glue:
            out += " "
        out += token
        glue_next = token in NO_SPACE_AFTER
        previous = token
    return out


def main() -> None:
    candidates = []
    for number, doc in enumerate(read_conll(SOURCE), start=1):
        tokens = doc.text.split(" ")
        if doc.spans and MIN_TOKENS <= len(tokens) <= MAX_TOKENS:
            candidates.append((number, tokens))
    chosen = sorted(random.Random(SEED).sample(candidates, SIZE))
    with TARGET.open("w", encoding="utf-8") as out:
        for number, tokens in chosen:
            record = {"id": f"fewnerd-test-{number}", "text": detokenize(tokens)}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"wrote {len(chosen)} of {len(candidates)} candidate sentences to {TARGET}")


if __name__ == "__main__":
    main()
