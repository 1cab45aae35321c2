"""The GPU runner Job template as the program publishes it, and a smoke Job made from it
as the broker makes one: digits put in place of the run's placeholders, the Job named and
labelled as the contract says. Pure functions.
"""

from __future__ import annotations


from runner_contract import (
    fill_run,
    APP_NAME_LABEL,
    GPU_RUNNER,
    RUN_ATTEMPT_LABEL,
    RUN_ID_LABEL,
    RUN_INDEX_LABEL,
    SMOKE_TEST_LABEL,
    gpu_runner_job_name,
)


class TemplateError(Exception):
    """The template is not a Job the smoke test can make runners from; the message says why."""


def parse_template(text: str) -> dict:
    """The YAML text of the ConfigMap's key, as a batch/v1 Job with a pod template."""
    import yaml  # only here: `--help` and the settings' checks work without PyYAML

    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise TemplateError(f"is not YAML: {' '.join(str(error).split())[:200]}") from None
    if not isinstance(document, dict) or document.get("apiVersion") != "batch/v1" or document.get("kind") != "Job":
        raise TemplateError("is not a batch/v1 Job")
    pod_spec = ((document.get("spec") or {}).get("template") or {}).get("spec")
    if not isinstance(pod_spec, dict) or not pod_spec.get("containers"):
        raise TemplateError("has no containers in spec.template.spec")
    return document


def render_job(template: dict, run_id: int, attempt: int, namespace: str) -> dict:
    """The Job for run `run_id`, attempt `attempt`: the template with only its two
    placeholders filled in (any other `$` text stays as it is), named and labelled as the
    broker names and labels the runner Jobs it makes, and marked as the smoke test's."""
    run, tried = str(int(run_id)), str(int(attempt))
    job = fill_run(template, run, tried)
    labels = {
        APP_NAME_LABEL: GPU_RUNNER,
        RUN_ID_LABEL: run,
        RUN_ATTEMPT_LABEL: tried,
        RUN_INDEX_LABEL: "0",
        SMOKE_TEST_LABEL: "true",
    }
    metadata = job.setdefault("metadata", {})
    for server_field in ("resourceVersion", "uid", "creationTimestamp"):
        metadata.pop(server_field, None)
    metadata["name"] = gpu_runner_job_name(run, tried)
    metadata["namespace"] = namespace
    metadata["labels"] = {**(metadata.get("labels") or {}), **labels}
    pod_metadata = job["spec"]["template"].setdefault("metadata", {})
    pod_metadata["labels"] = {**(pod_metadata.get("labels") or {}), **labels}
    return job


def images(job: dict) -> list[str]:
    """The images of the Job's containers."""
    containers = ((job.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
    return [str(c.get("image")) for c in containers if isinstance(c, dict) and c.get("image")]
