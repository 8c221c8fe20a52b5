"""Head training with detected non-mention spans as extra negatives (tiny random Llama)."""

import numpy as np
import torch

from ner_retriever.models.head import ProjectionHead
from ner_retriever.training.negatives import EXACT, NONE, PARTIAL, match_kind
from ner_retriever.training.train import TrainConfig, train_head
from ner_retriever.training.mentions import MentionSet
from ner_retriever.types import Span

NAMES = {"city": ["Paris", "Berlin", "Madrid", "Rome", "Oslo", "Vienna"],
         "person": ["Alice Smith", "Bob Jones", "Carol King", "Dan Brown", "Eve Stone",
                    "Frank Hall"]}
JUNK = ["Government of", "Performers", "Lyricists", "the team", "File Photo", "RT"]


def test_match_kind():
    gold = [Span(0, 5, "x"), Span(10, 20, "y")]
    assert match_kind((0, 5), gold) == EXACT
    assert match_kind((12, 25), gold) == PARTIAL
    assert match_kind((6, 9), gold) == NONE


def _sets(encoder):
    texts, spans, labels = [], [], []
    for t, names in NAMES.items():
        for n in names:
            text = f"We met {n} there."
            texts.append(text)
            spans.append([(7, 7 + len(n))])
            labels.append(t)
    vecs = encoder.encode_targets(texts, spans, [(encoder.config.block, "value")])[0]
    ms = MentionSet(np.concatenate(vecs).astype(np.float32), np.array(labels),
                    np.arange(len(labels)), len(labels), np.array(labels))
    junk = [f"We saw {j} there." for j in JUNK]
    neg = encoder.encode_targets(junk, [[(7, 7 + len(j))] for j in JUNK],
                                 [(encoder.config.block, "value")])[0]
    queries = {t: np.stack(encoder.encode_queries([t, f"a {t}"])).astype(np.float32)
               for t in NAMES}
    return ms, np.concatenate(neg).astype(np.float32), queries


def test_training_with_negatives_lowers_loss_and_reloads(tiny_encoder, tmp_path):
    torch.set_num_threads(1)
    ms, neg, queries = _sets(tiny_encoder)
    cfg = TrainConfig(epochs=6, cv_folds=0, val_fraction=0, min_mentions=2, batch_size=8,
                      types_per_batch=2, negatives_per_batch=4, lr=1e-2, steps_per_epoch=5)
    result = train_head(ms, queries, cfg, progress=False, negatives=neg)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0]
    plain = train_head(ms, queries, cfg, progress=False)
    assert [h["loss"] for h in plain.history] != losses  # the negatives enter the loss
    result.head.save(tmp_path / "h")
    back = ProjectionHead.load(tmp_path / "h")
    x = torch.from_numpy(np.concatenate([ms.vectors, neg]))
    with torch.no_grad():
        assert torch.equal(result.head.eval()(x), back.eval()(x))
