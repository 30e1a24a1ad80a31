"""Exceptions a user can act on; each message says what is wrong and what to do."""


class AskcorpusError(Exception):
    """Base class for every error askcorpus raises on purpose."""


class ConfigError(AskcorpusError):
    """A setting has a value askcorpus cannot use."""


class IngestError(AskcorpusError):
    """A source file cannot be read as a document (the build skips it)."""


class IndexNotFoundError(AskcorpusError):
    """No built index at the given directory."""


class IndexFormatError(AskcorpusError):
    """The index on disk was written by another format version or is damaged."""


class ModelMismatchError(AskcorpusError):
    """The index was built with another embedding model than the one configured."""


class IndexLockedError(AskcorpusError):
    """Another build holds the index lock."""


class QueryError(AskcorpusError):
    """The query or its parameters are not acceptable."""


class FilterError(QueryError):
    """A search filter is malformed, or asks of the index something it did not record."""


class DocumentNotFoundError(QueryError):
    """A doc_id the loaded index does not hold."""

    def __init__(self, doc_id: str) -> None:
        super().__init__(f"no document {doc_id!r} in the index")
        self.doc_id = doc_id


class EmptyCorpusError(AskcorpusError):
    """The corpus folder has no readable document."""


class EncoderExportError(AskcorpusError):
    """The model cannot be run by ONNX Runtime (not installed, export failed, or its vectors disagree)."""


class RerankerError(AskcorpusError):
    """The reranker's files are missing, damaged, or not a cross-encoder askcorpus can run."""


class ClusterError(AskcorpusError):
    """The Ray cluster a build was sent to cannot be reached or failed the build (nothing was written)."""


class GenerationUnavailableError(QueryError):
    """A generated answer was asked of a server or command with no language model configured."""


class GenerationError(AskcorpusError):
    """The language model could not write an answer: unreachable, refused, too slow, or its reply was unusable."""
