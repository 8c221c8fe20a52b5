"""Tests for the streaming corpus readers."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from ner_retriever.io.corpus import (
    FORMATS,
    iter_batches,
    read_conll,
    read_corpus,
    read_folder,
    read_jsonl,
    read_text,
)
from ner_retriever.errors import ConfigError, CorpusError
from ner_retriever.types import Document

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SAMPLE = Path(__file__).resolve().parents[2] / "src" / "ner_retriever" / "data" / "sample.jsonl"


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def entities(doc: Document) -> list[tuple[str, str | None]]:
    """The gold spans as (surface text, label) pairs."""
    return [(doc.text[s.start : s.end], s.label) for s in doc.spans or ()]


def assert_error_at(exc: pytest.ExceptionInfo[CorpusError], path: Path, line: int) -> None:
    message = str(exc.value)
    assert path.name in message
    assert f":{line}:" in message
    assert exc.value.line == line


# --- JSONL -------------------------------------------------------------------------------


def test_jsonl_reads_ids_text_metadata_and_source(tmp_path: Path) -> None:
    path = write(
        tmp_path / "docs.jsonl",
        '{"id": "a", "text": "Paris is big.", "lang": "en", "tags": [1, 2]}\n'
        "\n"
        '{"id": 7, "text": "Berlin too."}\n'
        "   \n",
    )
    docs = list(read_jsonl(path))
    assert [d.id for d in docs] == ["a", "7"]
    assert docs[0].text == "Paris is big."
    assert docs[0].metadata == {"lang": "en", "tags": [1, 2]}
    assert docs[1].metadata == {}
    assert docs[0].spans is None
    assert docs[0].source == f"{path}:1"
    assert docs[1].source == f"{path}:3"


def test_jsonl_accepts_crlf_and_bom(tmp_path: Path) -> None:
    content = '\ufeff{"id": "a", "text": "x y"}\r\n{"id": "b", "text": "z"}\r\n'
    path = write(tmp_path / "docs.jsonl", content)
    assert [(d.id, d.text) for d in read_jsonl(path)] == [("a", "x y"), ("b", "z")]


@pytest.mark.parametrize(
    ("bad_line", "fragment"),
    [
        ('{"id": "b", "text": ', "malformed JSON"),
        ('["b", "text"]', "JSON object"),
        ('{"id": "b"}', '"text"'),
        ('{"id": "b", "text": 5}', '"text" must be a string'),
        ('{"text": "no id"}', '"id"'),
        ('{"id": null, "text": "x"}', '"id" must be'),
        ('{"id": "", "text": "x"}', '"id" is empty'),
        ('{"id": "b", "text": ""}', "empty text"),
        ('{"id": "b", "text": "  \\t "}', "empty text"),
        ('{"id": "a", "text": "again"}', "duplicate document id 'a'"),
    ],
)
def test_jsonl_bad_lines_name_file_and_line(tmp_path: Path, bad_line: str, fragment: str) -> None:
    path = write(tmp_path / "bad.jsonl", '{"id": "a", "text": "fine"}\n\n' + bad_line + "\n")
    with pytest.raises(CorpusError, match=fragment) as exc:
        list(read_jsonl(path))
    assert_error_at(exc, path, 3)


def test_jsonl_duplicate_int_and_string_id(tmp_path: Path) -> None:
    path = write(tmp_path / "dup.jsonl", '{"id": 1, "text": "x"}\n{"id": "1", "text": "y"}\n')
    with pytest.raises(CorpusError, match="duplicate") as exc:
        list(read_jsonl(path))
    assert_error_at(exc, path, 2)


def test_jsonl_invalid_utf8_names_line(tmp_path: Path) -> None:
    content = b'{"id": "a", "text": "ok"}\n{"id": "b", "text": "caf\xe9"}\n'
    path = write(tmp_path / "latin.jsonl", content)
    with pytest.raises(CorpusError, match="invalid UTF-8") as exc:
        list(read_jsonl(path))
    assert_error_at(exc, path, 2)


def test_jsonl_streams_documents_before_reading_later_lines(tmp_path: Path) -> None:
    content = '{"id": "a", "text": "first"}\n{"id": "b", "text": "second"}\nnot json\n'
    path = write(tmp_path / "stream.jsonl", content)
    docs = read_jsonl(path)
    assert next(docs).id == "a"  # yielded although line 3 is broken
    assert next(docs).id == "b"
    with pytest.raises(CorpusError) as exc:
        next(docs)
    assert_error_at(exc, path, 3)


def test_jsonl_reads_lazily_line_by_line(tmp_path: Path) -> None:
    """Lines appended after the first document was yielded are still seen: nothing is pre-read."""
    path = write(tmp_path / "grow.jsonl", '{"id": "a", "text": "first"}\n' + " " * 100_000 + "\n")
    docs = read_jsonl(path)
    assert next(docs).id == "a"
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"id": "b", "text": "appended later"}\n')
    assert [d.id for d in docs] == ["b"]


def test_missing_file_is_a_corpus_error(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="nope.jsonl"):
        list(read_jsonl(tmp_path / "nope.jsonl"))


# --- plain text --------------------------------------------------------------------------


def test_text_one_document_per_line_numbered_by_physical_line(tmp_path: Path) -> None:
    content = "Alpha beta.\n\n  \nGamma delta.\r\nlast line without newline"
    path = write(tmp_path / "lines.txt", content)
    docs = list(read_text(path))
    assert [(d.id, d.text) for d in docs] == [
        ("1", "Alpha beta."),
        ("4", "Gamma delta."),
        ("5", "last line without newline"),
    ]
    assert docs[1].source == f"{path}:4"
    assert docs[0].metadata == {} and docs[0].spans is None


def test_text_keeps_unicode_line_separators_inside_a_document(tmp_path: Path) -> None:
    path = write(tmp_path / "sep.txt", "one\u2028still one\nTwo\n")
    assert [d.id for d in read_text(path)] == ["1", "2"]


def test_text_invalid_utf8_names_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.txt", b"fine\n\nalso fine\n\xff\xfe broken\n")
    with pytest.raises(CorpusError, match="invalid UTF-8") as exc:
        list(read_text(path))
    assert_error_at(exc, path, 4)


# --- folder ------------------------------------------------------------------------------


def test_folder_reads_txt_files_recursively_sorted(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    write(root / "b.txt", "Second file.\nWith two lines.\n")
    write(root / "a.txt", "First file.")
    write(root / "sub" / "deeper" / "c.txt", "Nested file.")
    write(root / "notes.md", "ignored")
    docs = list(read_folder(root))
    assert [d.id for d in docs] == ["a.txt", "b.txt", "sub/deeper/c.txt"]
    assert docs[1].text == "Second file.\nWith two lines.\n"
    assert docs[2].source == f"{root / 'sub' / 'deeper' / 'c.txt'}:1"


@pytest.mark.parametrize("content", [b"", b"  \n\t\n"])
def test_folder_empty_file_is_named(tmp_path: Path, content: bytes) -> None:
    root = tmp_path / "corpus"
    write(root / "ok.txt", "Fine.")
    write(root / "empty.txt", content)
    with pytest.raises(CorpusError, match="empty") as exc:
        list(read_folder(root))
    assert "empty.txt" in str(exc.value)


def test_folder_invalid_utf8_is_named(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    write(root / "latin1.txt", b"line one\nna\xefve\n")
    with pytest.raises(CorpusError, match="invalid UTF-8") as exc:
        list(read_folder(root))
    assert_error_at(exc, root / "latin1.txt", 2)


def test_folder_without_txt_files(tmp_path: Path) -> None:
    write(tmp_path / "corpus" / "a.md", "x")
    with pytest.raises(CorpusError, match=r"no \*\.txt files"):
        list(read_folder(tmp_path / "corpus"))


# --- CoNLL -------------------------------------------------------------------------------


def test_conll_bio_tab_separated(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bio.conll",
        "-DOCSTART-\tO\n\n"
        "The\tO\nSan\tB-location_GPE\nDiego\tI-location_GPE\n"
        "Harbor\tB-org\nPolice\tI-org\n.\tO\n\n\n"
        "Paris\tB-location_GPE\n",
    )
    docs = list(read_conll(path))
    assert [d.id for d in docs] == ["bio.conll:1", "bio.conll:2"]
    assert docs[0].text == "The San Diego Harbor Police ."
    assert entities(docs[0]) == [("San Diego", "location_GPE"), ("Harbor Police", "org")]
    assert entities(docs[1]) == [("Paris", "location_GPE")]
    assert docs[0].source == f"{path}:3"
    assert docs[1].source == f"{path}:11"
    assert docs[0].metadata == {}


def test_conll_io_bare_tags(tmp_path: Path) -> None:
    path = write(
        tmp_path / "io.conll",
        "Barack\tperson\nObama\tperson\nmet\tO\nAngela\tperson\nMerkel\tperson\nin\tO\n"
        "New\tlocation\nYork\tlocation\nCity\torganization\n",
    )
    (doc,) = read_conll(path)
    assert entities(doc) == [
        ("Barack Obama", "person"),
        ("Angela Merkel", "person"),
        ("New York", "location"),
        ("City", "organization"),
    ]


def test_conll_bioes(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bioes.conll",
        "Ban\tB-PER\nKi\tI-PER\nmoon\tE-PER\nvisited\tO\nSeoul\tS-LOC\nBusan\tS-LOC\n"
        "and\tO\nNew\tB-LOC\nYork\tE-LOC\nCity\tE-LOC\n",
    )
    (doc,) = read_conll(path)
    assert entities(doc) == [
        ("Ban Ki moon", "PER"),
        ("Seoul", "LOC"),
        ("Busan", "LOC"),
        ("New York", "LOC"),
        ("City", "LOC"),  # E- without an open span is repaired to a one-token span
    ]


def test_conll_repairs_broken_bio(tmp_path: Path) -> None:
    path = write(
        tmp_path / "broken.bio",
        "the\tO\nBig\tI-ORG\nCorp\tI-ORG\nof\tI-LOC\nTexas\tI-LOC\nand\tO\nAda\tB-PER\n"
        "Lovelace\tI-PER\nLondon\tI-LOC\n",
    )
    (doc,) = read_conll(path)
    assert entities(doc) == [
        ("Big Corp", "ORG"),
        ("of Texas", "LOC"),
        ("Ada Lovelace", "PER"),
        ("London", "LOC"),
    ]


def test_conll_multiconer_layout(tmp_path: Path) -> None:
    path = write(
        tmp_path / "en-dev.conll",
        "\n# id 5239d808-f300-46ea-aa3b-5093040213a3\tdomain=en\n"
        "eli _ _ B-OtherPER\nlilly _ _ I-OtherPER\nfounder _ _ O\nof _ _ O\n"
        "eli _ _ B-PublicCorp\nlilly _ _ I-PublicCorp\n"
        "and _ _ I-PublicCorp\ncompany _ _ I-PublicCorp\n\n\n"
        "# id second-id\tdomain=en\nparis _ _ B-HumanSettlement\n\n"
        "untitled _ _ O\n",
    )
    docs = list(read_conll(path))
    assert [d.id for d in docs] == [
        "5239d808-f300-46ea-aa3b-5093040213a3",
        "second-id",
        "en-dev.conll:3",
    ]
    assert entities(docs[0]) == [("eli lilly", "OtherPER"), ("eli lilly and company", "PublicCorp")]
    assert docs[0].source == f"{path}:3"
    assert entities(docs[1]) == [("paris", "HumanSettlement")]


def test_conll_comments_skipped_but_hashtag_tokens_kept(tmp_path: Path) -> None:
    path = write(
        tmp_path / "wnut.conll",
        "# sent_id = 1\n# text = love #Nike so much\nlove\tO\n#\tO\n#Nike\tB-corporation\nso\tO\n",
    )
    (doc,) = read_conll(path)
    assert doc.text == "love # #Nike so"
    assert entities(doc) == [("#Nike", "corporation")]
    assert doc.source == f"{path}:3"


def test_conll_offsets_follow_multibyte_tokens(tmp_path: Path) -> None:
    content = "Čilić\tB-PER\nbeat\tO\n사랑인거죠\tB-WORK\nØ\tI-WORK\n"
    path = write(tmp_path / "u.conll", content)
    (doc,) = read_conll(path)
    assert entities(doc) == [("Čilić", "PER"), ("사랑인거죠 Ø", "WORK")]


def test_conll_single_column_line_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.conll", "Paris\tB-LOC\n\nLondon\n")
    with pytest.raises(CorpusError, match="token and a tag") as exc:
        list(read_conll(path))
    assert_error_at(exc, path, 3)


def test_conll_invalid_utf8_names_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.conll", b"Paris\tB-LOC\nM\xfcnchen\tB-LOC\n")
    with pytest.raises(CorpusError, match="invalid UTF-8") as exc:
        list(read_conll(path))
    assert_error_at(exc, path, 2)


def _raw_sentences(path: Path, limit: int) -> list[list[tuple[str, str]]]:
    """An independent, minimal parse of the first ``limit`` sentences: (token, tag) pairs."""
    sentences: list[list[tuple[str, str]]] = [[]]
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            columns = line.split()
            if line.startswith("# id ") or columns[:1] == ["-DOCSTART-"]:
                continue
            if columns:
                sentences[-1].append((columns[0], columns[-1]))
            elif sentences[-1]:
                if len(sentences) == limit:
                    break
                sentences.append([])
    return sentences


@pytest.mark.parametrize(
    "relative",
    [
        "fewnerd/inter_bio_structshot/big_test.txt",
        "multiconer2_en/en-dev.conll",
        "wnut17/emerging.dev.conll",
    ],
)
def test_conll_real_data_slice(relative: str) -> None:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} not available")
    docs = list(itertools.islice(read_conll(path), 50))
    raw = _raw_sentences(path, 50)
    assert len(docs) == len(raw) == 50
    assert len({d.id for d in docs}) == 50
    for doc, sentence in zip(docs, raw):
        assert doc.text.split(" ") == [token for token, _ in sentence]
        expected_entities = sum(tag.startswith("B-") for _, tag in sentence)
        assert len(doc.spans or ()) >= expected_entities
        for span in doc.spans or ():
            surface = doc.text[span.start : span.end]
            assert surface == surface.strip() and surface
            assert span.label and not span.label.startswith(("B-", "I-"))
    assert any(doc.spans for doc in docs)


# --- dispatch ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "expected_ids"),
    [
        ("a.jsonl", '{"id": "x", "text": "t"}\n', ["x"]),
        ("a.json", '{"id": "x", "text": "t"}\n', ["x"]),
        ("a.conll", "Paris\tB-LOC\n", ["a.conll:1"]),
        ("a.iob", "Paris\tB-LOC\n", ["a.iob:1"]),
        ("a.bio", "Paris LOC\n", ["a.bio:1"]),
        ("a.txt", "Paris is nice\nRome too\n", ["1", "2"]),
        ("train.txt", "# comment\n\nParis\tB-LOC\nis\tO\n", ["train.txt:1"]),  # sniffed
        ("a.tsv", "-DOCSTART- O\n\nThe _ _ O\n", ["a.tsv:1"]),  # sniffed
        ("notes", "Two words\n", ["1"]),
    ],
)
def test_read_corpus_auto_detects_format(
    tmp_path: Path, name: str, content: str, expected_ids: list[str]
) -> None:
    path = write(tmp_path / name, content)
    assert [d.id for d in read_corpus(path)] == expected_ids


def test_read_corpus_folder_and_explicit_format(tmp_path: Path) -> None:
    file = write(tmp_path / "dir" / "one.txt", "Paris\tB-LOC\n")
    assert [d.id for d in read_corpus(tmp_path / "dir")] == ["one.txt"]
    assert [d.id for d in read_corpus(file, format="conll")] == ["one.txt:1"]
    assert [d.id for d in read_corpus(str(file), format="text")] == ["1"]


def test_read_corpus_unknown_format_lists_valid_values(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", "x\n")
    with pytest.raises(ConfigError) as exc:
        read_corpus(path, format="csv")
    for name in FORMATS:
        assert name in str(exc.value)


def test_read_corpus_missing_path_fails_on_call(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="no such file or directory") as exc:
        read_corpus(tmp_path / "missing.jsonl")
    assert "missing.jsonl" in str(exc.value)


def test_read_corpus_format_and_path_kind_must_agree(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", "x\n")
    with pytest.raises(CorpusError, match="directory"):
        read_corpus(path, format="folder")
    with pytest.raises(CorpusError, match="folder"):
        read_corpus(tmp_path, format="jsonl")


def test_bundled_sample_corpus() -> None:
    docs = list(read_corpus(SAMPLE))
    assert len(docs) == 300
    assert len({d.id for d in docs}) == 300
    assert all(d.id.startswith("fewnerd-test-") for d in docs)
    assert all(d.text.strip() == d.text and " ," not in d.text for d in docs)
    assert json.loads(SAMPLE.read_text(encoding="utf-8").splitlines()[0]).keys() == {"id", "text"}


# --- batching ----------------------------------------------------------------------------


def test_iter_batches_is_lazy_and_keeps_remainder() -> None:
    consumed: list[int] = []

    def numbers():
        for i in range(7):
            consumed.append(i)
            yield i

    batches = iter_batches(numbers(), 3)
    assert next(batches) == [0, 1, 2]
    assert consumed == [0, 1, 2]
    assert list(batches) == [[3, 4, 5], [6]]
    assert list(iter_batches([], 2)) == []


def test_iter_batches_rejects_non_positive_size() -> None:
    with pytest.raises(ConfigError):
        list(iter_batches([1], 0))
