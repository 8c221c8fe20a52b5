"""The span sets that benchmarks/detection_gap.py splits a detector's gap to gold into."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
try:
    from detection_gap import variants
finally:
    sys.path.pop(0)


def test_variants_keep_confidences_with_their_spans() -> None:
    gold = [[(0, 5)], [], [(10, 14), (20, 25)]]
    found = [[(0, 3), (7, 9)], [(2, 4)], [(21, 25)]]
    conf = [[0.9, 0.2], [0.5], [0.8]]
    sets = variants(gold, found, conf)
    assert sets["gold"] == (gold, [[None], [], [None, None]])
    assert sets["detected"] == (found, conf)
    # only the detected spans that overlap an annotated one
    assert sets["detected on gold"] == ([[(0, 3)], [], [(21, 25)]], [[0.9], [], [0.8]])
    # every detected span, but only where a document has an annotated mention
    assert sets["detected in annotated docs"] == ([[(0, 3), (7, 9)], [], [(21, 25)]],
                                                  [[0.9, 0.2], [], [0.8]])
    # gold spans (certain) plus the detected spans that overlap none, in text order
    assert sets["gold + detected"] == ([[(0, 5), (7, 9)], [(2, 4)], [(10, 14), (20, 25)]],
                                       [[None, 0.2], [0.5], [None, None]])
