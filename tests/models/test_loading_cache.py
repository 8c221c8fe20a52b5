"""The dequantised-weights cache: written once, then loaded from the cache; its tokenizer
loads through the plain fast class only where that was checked to tokenise identically."""

from __future__ import annotations

import pytest

from ner_retriever.models import loading


@pytest.mark.slow
def test_cached_model_loads_with_an_identical_fast_tokenizer(tmp_path, monkeypatch):
    monkeypatch.setenv("NER_RETRIEVER_CACHE", str(tmp_path))
    _, first = loading.load_model("smollm2-135m")  # dequantises and writes the cache
    (folder,) = (tmp_path / "models").iterdir()
    assert (folder / loading.FAST_MARKER).is_file()
    model, again = loading.load_model("smollm2-135m")
    from transformers import PreTrainedTokenizerFast

    assert type(again) is PreTrainedTokenizerFast
    assert loading._same_tokens(first, again)
    text = "Angela Merkel met Emmanuel Macron in Paris."
    assert again(text)["input_ids"] == first(text)["input_ids"]
    (folder / loading.FAST_MARKER).unlink()  # without the check: the model's own class
    assert type(loading._cached_tokenizer(folder)).__name__ == type(first).__name__


def test_tokenizers_that_differ_are_not_the_same():
    class Tok:
        pad_token_id = 0

        def __init__(self, shift):
            self.shift = shift

        def __call__(self, text, add_special_tokens, return_offsets_mapping):
            return {"input_ids": [len(text) + self.shift], "offset_mapping": [(0, len(text))]}

    assert loading._same_tokens(Tok(0), Tok(0)) and not loading._same_tokens(Tok(0), Tok(1))


def test_a_tokenizer_without_tokenizer_json_keeps_its_own_class(tmp_path):
    assert not loading._fast_equivalent(object(), tmp_path)  # nothing to check: no marker
    (tmp_path / "tokenizer.json").write_text("not json")
    (tmp_path / "tokenizer_config.json").write_text("{}")
    assert not loading._fast_equivalent(object(), tmp_path)  # unloadable on its own
