"""The images: what each is built from, where it is published, and where the cluster pulls it."""

import re

import pytest

from program_harness import FAKE_GCP_ACCESS_TOKEN, GITHUB_TOKEN, fake_digest, is_secret, run_program
from program.manifests.images import BROKER_IMAGE, RUNNER_IMAGE, ImageSource, context_digest

IMAGE = "docker:index/image:Image"
PUSH = "docker:index/registryImage:RegistryImage"
IMAGES = [("runner-image", RUNNER_IMAGE), ("broker-image", BROKER_IMAGE)]
CLUSTER_REPOSITORY = "us-central1-docker.pkg.dev/acme-ml/gpu-runners-images"


@pytest.mark.parametrize("name, source", IMAGES)
def test_each_image_is_built_for_linux_amd64_with_the_repository_as_context(program, name, source):
    build = program.one(IMAGE, name).inputs["build"]
    assert build == {"context": ".", "dockerfile": source.dockerfile, "platform": "linux/amd64"}


@pytest.mark.parametrize("name, source", IMAGES)
def test_each_image_is_published_to_ghcr_under_the_repository_in_lowercase_with_a_content_tag(program, name, source):
    image_name = program.one(IMAGE, name).inputs["imageName"]
    assert re.fullmatch(rf"ghcr\.io/acme/models/{source.name}:[0-9a-f]{{12}}", image_name), image_name
    assert program.one(IMAGE, name).inputs.get("skipPush") is not True


def test_registry_login_is_the_owner_with_the_registry_token_kept_secret(program):
    registry = program.one(IMAGE, "runner-image").raw_inputs["registry"]
    assert registry["server"] == "ghcr.io"
    assert registry["username"] == "Acme"
    assert is_secret(registry["password"]) and registry["password"]["value"] == GITHUB_TOKEN


def test_registry_token_overrides_the_github_token_for_the_push():
    program = run_program({"gke-gpu-runners:registryToken": "packages-token"})
    assert {program.one(IMAGE, name).raw_inputs["registry"]["password"]["value"] for name, _ in IMAGES} == {
        "packages-token"
    }


@pytest.mark.parametrize("name, source", IMAGES)
def test_the_same_image_is_pushed_to_the_clusters_repository_with_pulumi_ups_own_short_lived_google_token(
    program, name, source
):
    built, push = program.one(IMAGE, name), program.one(PUSH, name)
    assert push.inputs["name"].startswith(f"{CLUSTER_REPOSITORY}/{source.name}:")
    assert push.inputs["name"].rsplit(":", 1)[1] == built.inputs["imageName"].rsplit(":", 1)[1]
    auth = push.raw_inputs["authConfig"]
    assert auth["address"] == "us-central1-docker.pkg.dev" and auth["username"] == "oauth2accesstoken"
    assert is_secret(auth["password"]) and auth["password"]["value"] == FAKE_GCP_ACCESS_TOKEN
    tag = program.one("docker:index/tag:Tag", name)
    assert tag.inputs["targetImage"] == push.inputs["name"]
    assert tag.inputs["sourceImage"] == built.inputs["imageName"]


def test_published_and_cluster_images_are_pinned_by_the_same_digest(program):
    runner = program.outputs["runnerImage"]
    assert re.fullmatch(r"ghcr\.io/acme/models/github-runner@sha256:[0-9a-f]{64}", runner)
    digest = runner.rsplit("@", 1)[1]
    assert program.outputs["clusterRunnerImage"] == f"{CLUSTER_REPOSITORY}/github-runner@{digest}"
    broker = program.one(IMAGE, "broker-image").inputs["imageName"]
    assert program.outputs["brokerImage"] == f"{CLUSTER_REPOSITORY}/runner-broker@{fake_digest(broker)}"


@pytest.mark.parametrize("name, _source", IMAGES)
def test_image_build_does_not_wait_for_the_cluster(program, name, _source):
    image = program.one(IMAGE, name)
    for gcp in (r for r in program.resources if r.typ.startswith("gcp:")):
        assert not program.depends_on(image, gcp), gcp.name
    assert "GkeCluster" not in image.parent


def test_tag_changes_with_the_dockerfile_and_the_source_folders_and_nothing_else(tmp_path):
    source = ImageSource("x", "x/Dockerfile", ("x", "shared"))
    for folder in ("x", "shared", "other"):
        (tmp_path / folder).mkdir()
    (tmp_path / "x" / "Dockerfile").write_text("FROM scratch\n")
    before = context_digest(tmp_path, source)
    assert context_digest(tmp_path, source) == before
    (tmp_path / "other" / "unrelated.py").write_text("print()\n")
    (tmp_path / "x" / "__pycache__").mkdir()
    (tmp_path / "x" / "__pycache__" / "m.pyc").write_bytes(b"\0")
    assert context_digest(tmp_path, source) == before
    (tmp_path / "shared" / "names.py").write_text("A = 1\n")
    assert context_digest(tmp_path, source) != before
