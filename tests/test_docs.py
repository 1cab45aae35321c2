"""The docs stay true to the project they describe.

docs/configuration.md's table of keys matches Pulumi.yaml (each key once, with its type
and default), its outputs table matches what __main__.py exports, the README stays a
first screen, and every relative link in the docs points at a file that exists.
"""

import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

import runner_contract

ROOT = Path(__file__).resolve().parent.parent
CONFIGURATION = ROOT / "docs" / "configuration.md"
README = ROOT / "README.md"
README_MAX_LINES = 200
DOCS = sorted([README, ROOT / "CONTRIBUTING.md", *(ROOT / "docs").rglob("*.md")])

KEYS_HEADER = ("key", "type", "default", "meaning")
OUTPUTS_HEADER = ("output", "meaning")
GITHUB_HEADER = ("name", "value")

REQUIRED = object()
"""The default of a key Pulumi.yaml declares without one."""
# Provider keys cannot be declared in Pulumi.yaml; its header comment names them:
#   gcp:project    (string, required)  GCP project
PROVIDER_KEY = re.compile(r"^#\s+([a-z]+:[A-Za-z]+)\s+\((string|secret), (required[^)]*)\)", re.MULTILINE)
LITERAL = re.compile(r"^`([^`]+)`")


# --- Reading the documents ------------------------------------------------------------


def cells(line: str) -> list[str]:
    """A Markdown table row's cells; a `|` inside a code span does not split."""
    parts, current, in_code = [], "", False
    for char in line.strip().strip("|"):
        if char == "`":
            in_code = not in_code
        if char == "|" and not in_code:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    return parts


def table(text: str, header: tuple[str, ...]) -> list[list[str]]:
    """The rows of the first table in `text` whose header is `header`."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and tuple(c.lower() for c in cells(line)) == header:
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append(cells(row))
            return rows
    raise AssertionError(f"no table with header | {' | '.join(header)} |")


def names(cell: str) -> list[str]:
    """The code spans of a cell, e.g. the keys of `clusterName`, `clusterLocation`."""
    return re.findall(r"`([^`]+)`", cell)


def key_rows(header: tuple[str, ...] = KEYS_HEADER) -> list[tuple[str, str, str]]:
    """(key, type, default) of each row of a configuration table: one key per row."""
    rows = []
    for row in table(CONFIGURATION.read_text(), header):
        keys = names(row[0])
        assert len(keys) == 1, f"docs/configuration.md: one key per row, got {row[0]!r}"
        rows.append((keys[0], row[1], row[2]))
    return rows


def documented_keys() -> dict[str, tuple[str, str]]:
    return {key: (type_, default) for key, type_, default in key_rows()}


def declared_keys() -> dict[str, tuple[str, object, bool]]:
    """key -> (type, default or REQUIRED, secret) for every key Pulumi.yaml declares or names."""
    text = (ROOT / "Pulumi.yaml").read_text()
    declared = {}
    for key, type_, _ in PROVIDER_KEY.findall(text):
        declared[key] = ("string", REQUIRED, type_ == "secret")
    for key, spec in yaml.safe_load(text)["config"].items():
        secret = spec.get("description", "").startswith("Secret.")
        declared[key] = (spec["type"], spec.get("default", REQUIRED), secret)
    return declared


def kind(doc_type: str) -> str:
    """The Pulumi type a documented type stands for: bool, int, list of ..., anything else a string."""
    if doc_type == "bool":
        return "boolean"
    if doc_type == "int":
        return "integer"
    if doc_type.startswith("list"):
        return "array"
    return "string"


def rendered(default: object) -> str:
    """A declared default as a user types it."""
    return str(default).lower() if isinstance(default, bool) else str(default)


# --- The configuration table ------------------------------------------------------------


def test_provider_keys_are_named_in_pulumi_yaml():
    assert {"gcp:project", "gcp:zone", "github:token"} <= set(declared_keys())


def test_every_declared_key_has_exactly_one_row():
    counts = Counter(key for key, _, _ in key_rows())
    missing = sorted(key for key in declared_keys() if counts[key] == 0)
    repeated = sorted(key for key, n in counts.items() if n > 1)
    assert not missing, (
        f"Pulumi.yaml declares {missing} but docs/configuration.md's table of keys has no row "
        "for them: add one each, | `key` | type | default | meaning |"
    )
    assert not repeated, f"docs/configuration.md lists {repeated} more than once"


def test_no_undeclared_key_is_listed():
    declared = declared_keys()
    undeclared = sorted(
        key for key, (_, default) in documented_keys().items() if key not in declared and default != "removed"
    )
    assert not undeclared, (
        f"docs/configuration.md lists {undeclared}, which Pulumi.yaml does not declare: "
        "declare them, or move them under 'Not built yet'"
    )


def test_each_row_gives_the_declared_type():
    documented = documented_keys()
    for key, (declared_type, _, secret) in declared_keys().items():
        if key not in documented:
            continue  # test_every_declared_key_has_exactly_one_row says so
        doc_type, doc_default = documented[key]
        if doc_default == "removed":
            assert doc_type == "—", f"{key}: a removed key's type is '—', got {doc_type!r}"
            continue
        assert kind(doc_type) == declared_type, f"{key}: Pulumi.yaml says {declared_type}, the docs {doc_type!r}"
        assert (doc_type == "secret") == secret, (
            f"{key}: the docs' type {doc_type!r} and Pulumi.yaml's description (secret: {secret}) disagree"
        )


def test_each_row_gives_the_declared_default():
    documented = documented_keys()
    for key, (_, default, _) in declared_keys().items():
        if key not in documented:
            continue  # test_every_declared_key_has_exactly_one_row says so
        doc_type, doc_default = documented[key]
        if doc_default == "removed":
            continue
        literal = LITERAL.match(doc_default)
        if default is REQUIRED:
            assert doc_default.startswith("required"), f"{key}: Pulumi.yaml gives no default; the docs {doc_default!r}"
        elif default in ("", []):
            # "Not set": the program derives the value (the docs say how, or name the key it falls
            # back on), or requires it only without another key ("required unless ...").
            assert doc_default != "required", f"{key}: Pulumi.yaml gives a default, the docs say required"
            assert literal is None or literal[1] in documented, (
                f"{key}: Pulumi.yaml's default is empty, the docs give the value {literal[1]!r}"
            )
        else:
            assert literal and literal[1] == rendered(default), (
                f"{key}: Pulumi.yaml's default is {rendered(default)!r}; the docs' default cell must start with "
                f"`{rendered(default)}`, got {doc_default!r}"
            )
        choices = re.fullmatch(r"`([^`]+)`(?: or `([^`]+)`)+", doc_type)
        if choices and default not in (REQUIRED, ""):
            assert rendered(default) in names(doc_type), f"{key}: default {default!r} is not among {doc_type!r}"


# --- Outputs and what lands in GitHub ----------------------------------------------------


def test_every_stack_output_is_documented_and_nothing_else():
    exported = set(re.findall(r'pulumi\.export\(\s*"([^"]+)"', (ROOT / "__main__.py").read_text()))
    documented = {name for row in table(CONFIGURATION.read_text(), OUTPUTS_HEADER) for name in names(row[0])}
    assert exported, "found no pulumi.export in __main__.py"
    assert not exported - documented, f"outputs without a row in docs/configuration.md: {sorted(exported - documented)}"
    assert not documented - exported, f"documented outputs __main__.py does not export: {sorted(documented - exported)}"


def test_every_github_secret_and_variable_is_documented():
    documented = {name for row in table(CONFIGURATION.read_text(), GITHUB_HEADER) for name in names(row[0])}
    written = {
        runner_contract.KUBECONFIG_SECRET,
        runner_contract.WORKLOAD_IDENTITY_PROVIDER_VARIABLE,
        runner_contract.SERVICE_ACCOUNT_VARIABLE,
        runner_contract.OWNER_VARIABLE,
        runner_contract.DEPLOY_SERVICE_ACCOUNT_VARIABLE,
    }
    assert written <= documented, f"not in docs/configuration.md: {sorted(written - documented)}"


# --- The README and the links -------------------------------------------------------------


def test_readme_is_a_first_screen():
    lines = len(README.read_text().splitlines())
    assert lines < README_MAX_LINES, f"README.md has {lines} lines; keep it under {README_MAX_LINES}, the rest in docs/"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, seen = set(), Counter()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", without_fences(path.read_text()), re.MULTILINE):
        base = slug(heading)
        found.add(f"{base}-{seen[base]}" if seen[base] else base)
        seen[base] += 1
    return found


def without_fences(text: str) -> str:
    return re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.MULTILINE | re.DOTALL)


def without_code(text: str) -> str:
    """The text outside fenced code blocks and code spans, where links are links."""
    return re.sub(r"`[^`\n]*`", "", without_fences(text))


def relative_links(path: Path) -> list[str]:
    text = without_code(path.read_text())
    targets = re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)
    targets += re.findall(r"^\s*\[[^\]]+\]:\s*(\S+)", text, re.MULTILINE)
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.IGNORECASE)]


@pytest.mark.parametrize("document", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_existing_files(document):
    assert document.is_file(), f"{document.relative_to(ROOT)} is missing"
    broken = []
    for link in relative_links(document):
        target, _, anchor = link.partition("#")
        resolved = (document.parent / target).resolve() if target else document
        if not resolved.exists():
            broken.append(f"{link}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{link}: no heading with that anchor")
    assert not broken, f"{document.relative_to(ROOT)}: " + "; ".join(broken)
