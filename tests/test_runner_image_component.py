"""The runner image component: what it builds, where it pushes, and what it waits for."""

import re

from components.runner_image import context_digest
from conftest import GITHUB_TOKEN, is_secret, run_program

IMAGE = "docker:index/image:Image"


def test_image_is_built_for_linux_amd64_from_the_runner_image_folder(program):
    build = program.one(IMAGE).inputs["build"]
    assert build == {"context": "runner_image", "dockerfile": "runner_image/Dockerfile", "platform": "linux/amd64"}


def test_image_is_pushed_to_ghcr_under_the_repository_in_lowercase_with_a_content_tag(program):
    name = program.one(IMAGE).inputs["imageName"]
    assert re.fullmatch(r"ghcr\.io/acme/models/github-runner:[0-9a-f]{12}", name), name
    assert program.one(IMAGE).inputs.get("skipPush") is not True


def test_registry_login_is_the_owner_with_the_registry_token_kept_secret(program):
    registry = program.one(IMAGE).raw_inputs["registry"]
    assert registry["server"] == "ghcr.io"
    assert registry["username"] == "Acme"
    assert is_secret(registry["password"]) and registry["password"]["value"] == GITHUB_TOKEN


def test_registry_token_overrides_the_github_token_for_the_push():
    program = run_program({"gke-gpu-runners:registryToken": "packages-token"})
    assert program.one(IMAGE).raw_inputs["registry"]["password"]["value"] == "packages-token"


def test_runner_image_output_is_pinned_by_digest(program):
    assert re.fullmatch(r"ghcr\.io/acme/models/github-runner@sha256:[0-9a-f]{64}", program.outputs["runnerImage"])


def test_image_build_does_not_wait_for_the_cluster(program):
    image = program.one(IMAGE)
    for gcp in (r for r in program.resources if r.typ.startswith("gcp:")):
        assert not program.depends_on(image, gcp), gcp.name
    assert "GkeCluster" not in image.parent


def test_tag_changes_when_the_build_context_changes(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    before = context_digest(tmp_path)
    assert context_digest(tmp_path) == before
    (tmp_path / "startup.sh").write_text("echo\n")
    assert context_digest(tmp_path) != before
