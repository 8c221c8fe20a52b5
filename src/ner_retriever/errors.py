"""Errors users can act on. The CLI prints them as one line and exits non-zero."""

from __future__ import annotations


class NerRetrieverError(Exception):
    """Base class: anything raised on purpose for bad input or bad state."""


class CorpusError(NerRetrieverError):
    """A corpus file cannot be read; the message names the file and line."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        self.path = path
        self.line = line
        where = path if path is not None else ""
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {message}" if where else message)


class ConfigError(NerRetrieverError):
    """An option (model, block, component, detector, head, k, ...) is invalid."""


class UnsupportedRequestError(ConfigError):
    """A valid request this index cannot answer (a cut-off feature on a mention-only index)."""


class IndexStateError(NerRetrieverError):
    """The index directory is missing, locked, corrupt or incompatible."""


class DuplicateDocumentError(NerRetrieverError):
    """A document id is already in the index (or repeated in the input)."""

    def __init__(self, doc_id: str, where: str | None = None):
        self.doc_id = doc_id
        loc = f" ({where})" if where else ""
        super().__init__(
            f"document id {doc_id!r}{loc} is already in the index; pass "
            "--if-exists skip to resume an interrupted run or --if-exists update to replace it"
        )
