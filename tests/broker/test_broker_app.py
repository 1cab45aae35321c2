"""A GitHub App instead of a PAT: its JWT, installation tokens narrowed to this repository and to what the
broker does, cached, renewed before they expire, replaced at once when revoked."""

from __future__ import annotations

import base64
import json
import time

import pytest
from broker_harness import APP_ID, INSTALLATION_ID, REPOSITORY
from fake_github import Reply
from github_runners import access_tokens_path, runners_api

from runner_broker.config import load_config
from runner_broker.github import APP_TOKEN_MARGIN_SECONDS, GitHubClient

pytest_plugins = ["broker_fixtures"]  # setup, broker, make_setup

RUNNERS = runners_api(REPOSITORY)
GENERATE = runners_api(REPOSITORY, "/generate-jitconfig")
ACCESS_TOKENS = access_tokens_path(INSTALLATION_ID)


@pytest.fixture
def app(make_setup):
    return make_setup(app=True)


def decode_segment(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def verify_jwt(jwt: str, key) -> dict:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    header, claims, signature = jwt.split(".")
    key.public_key().verify(
        decode_segment(signature), f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    assert json.loads(decode_segment(header)) == {"alg": "RS256", "typ": "JWT"}
    return json.loads(decode_segment(claims))


def test_a_signed_jwt_buys_one_installation_token_for_this_repository_and_what_the_broker_does(app):
    broker = app.start_in_process()
    before = time.time()

    for _ in range(3):
        assert broker.jitconfig(app.cluster.base_runner_pod()).status == 201

    (jwt,) = app.app_jwts()  # one token for several requests
    claims = verify_jwt(jwt, app.app_keys[0])
    assert claims["iss"] == APP_ID and claims["exp"] - claims["iat"] <= 600
    assert claims["iat"] <= before and claims["exp"] > before + 300
    (request,) = app.github.requests_to(ACCESS_TOKENS)
    assert json.loads(request.body) == {
        "repositories": ["models"],
        "permissions": {"administration": "write", "actions": "read"},
    }
    token = app.runners.installation_tokens[0]
    runner_calls = [r for r in app.github.requests if r.path.startswith(RUNNERS)]
    assert runner_calls and {r.headers["authorization"] for r in runner_calls} == {f"Bearer {token}"}
    assert "GitHub App 424242 (installation 31337)" in broker.stderr[0]


def test_the_same_token_reads_the_runs_jobs(app):
    broker = app.start_in_process()
    caller = app.cluster.base_runner_pod()
    app.run_job(caller)

    assert broker.gpu_runners(caller).status == 201

    assert len(app.runners.installation_tokens) == 1


def test_a_rotated_app_key_gets_a_new_installation_token(app):
    broker = app.start_in_process()
    assert broker.jitconfig(app.cluster.base_runner_pod()).status == 201
    new_key = app.rotate_app_key()
    app.runners.accepted_tokens.clear()  # the old installation token no longer works
    before = len(app.github.requests)

    assert broker.jitconfig(app.cluster.base_runner_pod()).status == 201

    jwts = app.app_jwts()
    assert len(jwts) == 2 and verify_jwt(jwts[1], new_key)["iss"] == APP_ID
    new_token = app.runners.installation_tokens[1]
    runner_calls = [r for r in app.github.requests[before:] if r.path.startswith(RUNNERS)]
    assert {r.headers["authorization"] for r in runner_calls} == {f"Bearer {new_token}"}


def test_an_installation_token_revoked_early_is_replaced_within_the_request(app):
    broker = app.start_in_process()
    assert broker.jitconfig(app.cluster.base_runner_pod()).status == 201
    app.runners.accepted_tokens.discard(app.runners.installation_tokens[0])  # revoked before it expires

    answer = broker.jitconfig(app.cluster.base_runner_pod())

    assert answer.status == 201, answer.raw
    assert len(app.runners.installation_tokens) == 2
    bearers = [r.headers["authorization"] for r in app.github.requests_to(GENERATE)[1:]]
    assert bearers == [f"Bearer {token}" for token in app.runners.installation_tokens]


@pytest.mark.parametrize(
    "status, words",
    [
        (404, "installation 31337 of GitHub App 424242 does not exist"),
        (401, "refused the JWT of GitHub App 424242"),
        (422, "must include the repository and grant Administration: read and write and Actions: read"),
    ],
)
def test_an_app_refusal_names_the_app_and_what_to_fix(app, status, words):
    broker = app.start_in_process()
    app.github.script(ACCESS_TOKENS, Reply(status, {"message": "nope"}))

    answer = broker.jitconfig(app.cluster.base_runner_pod())

    assert answer.status == 502 and words in answer.body["error"], answer.raw


def test_an_installation_token_is_renewed_shortly_before_it_expires(app):
    now = [time.time()]
    client = GitHubClient(load_config(app.env()), clock=lambda: now[0])

    client.find_runner("x")
    client.find_runner("x")
    now[0] += 3600 - APP_TOKEN_MARGIN_SECONDS - 5
    client.find_runner("x")
    assert len(app.runners.installation_tokens) == 1

    now[0] += 10  # now within the margin
    client.find_runner("x")

    assert len(app.runners.installation_tokens) == 2
    last_call = app.github.requests_to(RUNNERS)[-1]
    assert last_call.headers["authorization"] == f"Bearer {app.runners.installation_tokens[1]}"
