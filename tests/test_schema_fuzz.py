"""The OpenAPI schema fuzzed with schemathesis against the running app: no 500s, responses match the schema.

The app runs under uvicorn in a thread on a free loopback port, over a fake-embedder index of the seeds,
with an admin token set (schemathesis does not know it, so it exercises the 401/403 answers).
"""

from __future__ import annotations

import shutil

import pytest

from conftest import serve_in_thread

pytestmark = pytest.mark.slow

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed: pip install schemathesis")
from hypothesis import HealthCheck, settings as hypothesis_settings  # noqa: E402

from askcorpus.api import create_app  # noqa: E402
from askcorpus.build import build_index  # noqa: E402
from askcorpus.config import Settings  # noqa: E402
from askcorpus.embed import HashingEmbedder  # noqa: E402


SETTINGS = {"model": "hashing-64", "admin_token": "fuzz-token-never-guessed", "reload_interval": 0}


@pytest.fixture(scope="module")
def live_url(tmp_path_factory, seeds_dir):
    root = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(seeds_dir, root / "corpus")
    settings = Settings(corpus=root / "corpus", index=root / "index", **SETTINGS)
    embedder = HashingEmbedder(dim=64)
    build_index(settings, embedder)
    with serve_in_thread(create_app(settings, embedder=embedder), start_timeout=30) as url:
        yield url


# The schema is the app's own OpenAPI document (generating it loads nothing); the cases run against the live
# server above. (schemathesis.pytest.from_fixture would fetch it from the server, but its lazy loader does not
# work with pytest 9.)
schema = schemathesis.openapi.from_dict(create_app(Settings(**SETTINGS)).openapi())


def _413_rejects(fuzzed) -> None:
    """A 413 is a rejection too: a schema-violating body (a filter list past its limit) that is also larger than
    ASKCORPUS_MAX_BODY_BYTES is refused for its size before it is parsed."""
    rejection = fuzzed.config.checks.negative_data_rejection
    rejection.expected_statuses = [*rejection.expected_statuses, "413"]


_413_rejects(schema)


@schema.parametrize()
@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case, live_url):
    # All of schemathesis's checks: no server error, documented status codes, content types and headers,
    # response bodies valid against the schema, valid data accepted and invalid data rejected.
    case.call_and_validate(base_url=live_url)


def test_served_schema_is_the_fuzzed_one(live_url):
    import httpx

    assert httpx.get(f"{live_url}/openapi.json").json() == schema.raw_schema


@pytest.fixture(scope="module")
def generating_url(tmp_path_factory, seeds_dir, scripted_llm_server):
    """The same app with a language model: the scripted endpoint, replying with one cited sentence."""
    from askcorpus.generate import generator_for

    llm, llm_url = scripted_llm_server
    llm.say("The report warned about ISKP [1]. It also names 2021 [2].")
    root = tmp_path_factory.mktemp("fuzz-generate")
    shutil.copytree(seeds_dir, root / "corpus")
    settings = Settings(corpus=root / "corpus", index=root / "index", llm_url=llm_url, **SETTINGS)
    embedder = HashingEmbedder(dim=64)
    build_index(settings, embedder)
    app = create_app(settings, embedder=embedder, generator=generator_for(settings))
    with serve_in_thread(app, start_timeout=30) as url:
        yield url


generating_schema = schemathesis.openapi.from_dict(
    create_app(Settings(llm_url="http://127.0.0.1:9/v1", **SETTINGS)).openapi())
_413_rejects(generating_schema)


@generating_schema.include(path="/search").parametrize()
@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_answers_conform_to_the_schema(case, generating_url):
    case.call_and_validate(base_url=generating_url)
