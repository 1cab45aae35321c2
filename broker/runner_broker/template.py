"""The GPU runner Job template the program mounts for the broker, and the Jobs made from it.

The file is a batch/v1 Job in JSON with `${GITHUB_RUN_ID}` and `${GITHUB_RUN_ATTEMPT}`
as placeholders. It is the broker's own copy, which no job can edit; it is read again on
each use, so an updated template takes effect without a restart. `render` is pure: it
substitutes digits the request was checked for, and names and labels the Job as the
contract says, whatever the template holds.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from runner_broker.errors import CredentialUnreadable, NotConfigured
from runner_broker.secrets import read_file, shown_path
from runner_contract import (
    fill_run,
    APP_NAME_LABEL,
    GPU_RUNNER,
    PART_OF,
    PART_OF_LABEL,
    RUN_ATTEMPT_LABEL,
    RUN_ID_LABEL,
    RUN_INDEX_LABEL,
    gpu_runner_job_name,
)

VARIABLE = "BROKER_GPU_RUNNER_TEMPLATE_FILE"
MAX_TEMPLATE_BYTES = 1 << 20


@dataclass(frozen=True)
class Template:
    document: dict
    images: tuple[str, ...]
    """The images of the pod template's containers, in order: a GPU runner's Job must have exactly these."""


def load_template(path: Path) -> Template:
    """The template from its file; CredentialUnreadable says what is wrong with it."""
    where = f"{VARIABLE} ({shown_path(path)})"
    data = read_file(path, VARIABLE)
    if len(data) > MAX_TEMPLATE_BYTES:
        raise CredentialUnreadable(f"{where} is larger than {MAX_TEMPLATE_BYTES} bytes")
    try:
        document = json.loads(data)
    except ValueError as error:
        raise CredentialUnreadable(f"{where} is not JSON: {error}") from None
    if not isinstance(document, dict) or document.get("apiVersion") != "batch/v1" or document.get("kind") != "Job":
        raise CredentialUnreadable(f"{where} is not a batch/v1 Job")
    images = pod_template_images(document)
    if not images:
        raise CredentialUnreadable(f"{where} has no container with an image in spec.template.spec.containers")
    return Template(document, images)


def pod_template_images(job: dict | None) -> tuple[str, ...]:
    """The images of a Job's pod template's containers, in order (empty when it has none)."""
    spec = ((((job or {}).get("spec") or {}).get("template") or {}).get("spec")) or {}
    containers = spec.get("containers") if isinstance(spec, dict) else None
    if not isinstance(containers, list):
        return ()
    images = tuple(c.get("image") for c in containers if isinstance(c, dict))
    return images if all(isinstance(image, str) and image for image in images) else ()


def job_labels(run_id: str, attempt: str, index: int) -> dict[str, str]:
    """The labels that make a Job one of this run attempt's GPU runners."""
    return {
        APP_NAME_LABEL: GPU_RUNNER,
        PART_OF_LABEL: PART_OF,
        RUN_ID_LABEL: run_id,
        RUN_ATTEMPT_LABEL: attempt,
        RUN_INDEX_LABEL: str(index),
    }


def render(template: Template, run_id: str, attempt: str, index: int, namespace: str) -> dict:
    """Job number `index` of the run attempt's GPU runners. `run_id` and `attempt` are ASCII digits."""
    if not (run_id.isascii() and run_id.isdigit() and attempt.isascii() and attempt.isdigit()):
        raise ValueError("the run ID and attempt must be ASCII digits")
    job = fill_run(template.document, run_id, attempt)
    labels = job_labels(run_id, attempt, index)
    metadata = job.setdefault("metadata", {})
    metadata["name"] = gpu_runner_job_name(run_id, attempt, index)
    metadata["namespace"] = namespace
    metadata["labels"] = {**(metadata.get("labels") or {}), **labels}
    metadata.pop("resourceVersion", None)
    metadata.pop("uid", None)
    pod_metadata = job["spec"]["template"].setdefault("metadata", {})
    pod_metadata["labels"] = {**(pod_metadata.get("labels") or {}), **labels}
    return job


class TemplateSource:
    """The template file, parsed again only when it changes (a ConfigMap update swaps the file)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._cached: tuple[tuple[int, int, int], Template] | None = None

    @property
    def configured(self) -> bool:
        return self.path is not None

    def load(self) -> Template:
        if self.path is None:
            raise NotConfigured(f"this broker makes no GPU runners: {VARIABLE} is not set")
        try:
            stat = os.stat(self.path)
        except OSError as error:
            raise CredentialUnreadable(
                f"{VARIABLE} ({shown_path(self.path)}) cannot be read: {error.strerror or type(error).__name__}"
            ) from None
        version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if self._cached is not None and self._cached[0] == version:
                return self._cached[1]
        template = load_template(self.path)
        with self._lock:
            self._cached = (version, template)
        return template
