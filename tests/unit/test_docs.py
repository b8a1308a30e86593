"""The documentation against the code it describes: command lines against the commands' own options, every
`MEDIX_*` name against the settings, every error type against docs/api.md, reference tables against the flags'
defaults. Each check reads the real objects (typer's click commands, the Settings class, the error table, the
source), so a renamed flag, setting or error type fails here until the docs follow."""

from __future__ import annotations

import ast
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from clients.client import ClientSettings
from service.api.errors import STATUS
from service.settings import DEPRECATED_ENV, Settings, env_names

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DEPLOY = [ROOT / "docker-compose.yml", ROOT / "Dockerfile",
          *sorted(p for p in (ROOT / "deploy").rglob("*") if p.is_file())]
API = (ROOT / "docs" / "api.md").read_text()


def _apps() -> dict[str, typer.Typer]:
    from clients.judge_cli import app as judge_app
    from service.cli import app as reward_app
    from trainer.cli import app as train_app

    return {"medix-reward": reward_app, "medix-judge": judge_app, "medix-train": train_app}


APPS = _apps()


def text(path: Path) -> str:
    return path.read_text(errors="replace")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --- commands ----------------------------------------------------------------------------------------------

def options(command: Any) -> dict[str, Any]:
    """Every option string of a click command (`--flag`, `--no-flag`, `--help`) -> its parameter."""
    out: dict[str, Any] = {"--help": None}
    for p in command.params:
        if getattr(p, "param_type_name", "") == "option":
            for opt in [*p.opts, *p.secondary_opts]:
                out[opt] = p
    return out


def resolve(program: str, words: list[str]) -> tuple[Any, str, list[str]]:
    """The click command that `program words...` runs, its full name, and the words left after the subcommands."""
    command = typer.main.get_command(APPS[program])
    name = program
    while hasattr(command, "commands") and words and words[0] in command.commands:
        name += f" {words[0]}"
        command = command.commands[words[0]]
        words = words[1:]
    if hasattr(command, "commands") and words and not words[0].startswith("-"):
        raise AssertionError(f"`{name}` has no command {words[0]!r} (it has {', '.join(sorted(command.commands))})")
    return command, name, words


SHELL_OPERATORS = {"&&", "||", ";", "|", "&", "(", ")", ">", ">>", "<", ">&", "2>", ";;"}


def shell_commands(line: str) -> Iterator[list[str]]:
    """The simple commands of one shell line (comments dropped, split at operators), as word lists."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    words: list[str] = []
    for token in lexer:
        if token in SHELL_OPERATORS or set(token) <= set("&|;()<>"):
            if words:
                yield words
            words = []
        else:
            words.append(token)
    if words:
        yield words


PROGRAM = re.compile(r"\bmedix-(?:reward|judge|train)\b")
FENCE = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", flags=re.M | re.S)  # fenced blocks, also in list items


def command_lines() -> Iterator[tuple[str, str]]:
    """(where, line) for each shell line in a fenced code block, and each inline code span, that runs a medix-*
    command; backslash continuations joined."""
    for path in DOCS:
        body = text(path)
        for block in re.findall(FENCE, body):
            for line in block.replace("\\\n", " ").splitlines():
                if PROGRAM.search(line):
                    yield rel(path), line
        prose = FENCE.sub("", body)
        for span in re.findall(r"`([^`\n]+)`", prose):
            if PROGRAM.search(span):
                yield rel(path), span


def medix_invocations() -> Iterator[tuple[str, str, list[str]]]:
    """(where, program, words after it) for every medix-* command the docs show."""
    for where, line in command_lines():
        try:
            commands = list(shell_commands(line))
        except ValueError as exc:  # unbalanced quotes: not a command line we can read
            raise AssertionError(f"{where}: cannot read {line!r}: {exc}") from exc
        for words in commands:
            for i, word in enumerate(words):
                program = word.rsplit("/", 1)[-1]
                if program in APPS:
                    yield where, program, words[i + 1:]
                    break


def test_the_docs_show_the_commands_this_test_reads():
    """A guard on the reader itself: if it found nothing, the flag check below would pass for nothing."""
    seen = {(program, resolve(program, words)[1]) for _, program, words in medix_invocations()}
    names = {name for _, name in seen}
    assert {"medix-reward serve", "medix-reward judge-server", "medix-reward bench", "medix-judge generate",
            "medix-judge run", "medix-judge compare", "medix-train"} <= names, names


def test_every_flag_in_a_documented_command_line_is_one_the_command_has():
    wrong = []
    for where, program, words in medix_invocations():
        command, name, rest = resolve(program, words)
        known = options(command)
        for word in rest:
            if word.startswith("--"):
                flag = word.split("=", 1)[0]
                if flag not in known:
                    wrong.append(f"{where}: `{name}` has no {flag}")
    assert not wrong, "\n".join(wrong)


# --- reference tables: | `medix-... cmd` | default | meaning | -------------------------------------------------

def reference_tables() -> Iterator[tuple[str, str, list[list[str]]]]:
    """(where, command name, rows of cells) for each table whose header is `| `<medix command>` | default | ...`."""
    for path in DOCS:
        lines = text(path).splitlines()
        i = 0
        while i < len(lines):
            if not lines[i].startswith("|"):
                i += 1
                continue
            table = []
            while i < len(lines) and lines[i].startswith("|"):
                table.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            header = table[0]
            m = re.fullmatch(r"`(medix-(?:reward|judge|train)(?: [\w-]+)*)`", header[0])
            if m and len(header) > 1 and header[1] == "default":
                yield rel(path), m.group(1), table[2:]


def shown_default(param: Any) -> str:
    if param.required:
        return "required"
    default = param.default() if callable(param.default) else param.default
    if param.secondary_opts:
        return param.opts[0] if default else param.secondary_opts[0]
    return "unset" if default is None else str(default)


def test_reference_tables_list_every_flag_with_its_default():
    tables = list(reference_tables())
    assert {name for _, name, _ in tables} >= {"medix-judge generate", "medix-judge run", "medix-judge compare",
                                               "medix-reward bench", "medix-train", "medix-reward serve",
                                               "medix-reward judge-server"}
    wrong = []
    for where, name, rows in tables:
        program, *words = name.split()
        command, resolved, rest = resolve(program, words)
        assert resolved == name and not rest, name
        known = options(command)
        listed = set()
        for row in rows:
            flags = [f.strip("` ") for f in row[0].split(" / ")]
            params = {id(known.get(f)): known.get(f) for f in flags}
            if any(f not in known for f in flags) or len(params) != 1:
                wrong.append(f"{where}: `{name}` has no {row[0]} (or it names two options)")
                continue
            param = next(iter(params.values()))
            listed.add(param.name)
            expected, cell = shown_default(param), row[1].strip("`")
            same = cell == expected or (isinstance(param.default, Path) and expected.endswith("/" + cell))
            if not same:
                wrong.append(f"{where}: `{name} {row[0]}` default is {expected!r}, the table says {cell!r}")
        missing = [p.opts[0] for p in command.params
                   if getattr(p, "param_type_name", "") == "option" and p.name not in listed and p.name != "help"]
        if missing:
            wrong.append(f"{where}: `{name}` table lacks {', '.join(missing)}")
    assert not wrong, "\n".join(wrong)


# --- settings ----------------------------------------------------------------------------------------------

def _haproxy_env() -> set[str]:
    """The variables the balancer example reads itself (`"${MEDIX_...}"`): the balancer's, not the service's."""
    return set(re.findall(r"\$\{(MEDIX_[A-Z0-9_]+)\}", text(ROOT / "deploy" / "haproxy" / "haproxy.cfg")))


KNOWN_ENV = ({env for name in Settings.model_fields for env in env_names(name) if env.startswith("MEDIX_")}
             | set(DEPRECATED_ENV)
             | {f"MEDIX_{name.upper()}" for name in ClientSettings.model_fields}  # MEDIX_URL, MEDIX_API_KEY
             | _haproxy_env())


def test_the_env_names_this_test_accepts_come_from_the_code():
    assert {"MEDIX_URL", "MEDIX_API_KEY", "MEDIX_JUDGE_URL", "MEDIX_JUDGE_PROMPT_FILE", "MEDIX_LB_BIND"} <= KNOWN_ENV


@pytest.mark.parametrize("path", [*DOCS, *DEPLOY], ids=rel)
def test_every_medix_env_name_mentioned_exists(path):
    names = set(re.findall(r"\bMEDIX_[A-Z0-9_]*[A-Z0-9]", text(path)))
    unknown = sorted(names - KNOWN_ENV)
    assert not unknown, f"{rel(path)} names settings that do not exist: {unknown}"


def test_judge_and_embed_urls_in_examples_end_in_v1():
    """The service appends /chat/completions, /models and /embeddings to these URLs."""
    urls = []
    for path in [*DOCS, *DEPLOY]:
        for m in re.finditer(r"MEDIX_(?:JUDGE|EMBED)_URLS?\s*[=:]\s*\"?([^\s\"`]+)", text(path)):
            urls += [(rel(path), u) for u in m.group(1).split(",") if u.startswith("http")]
    assert len(urls) >= 5
    bad = [f"{where}: {url}" for where, url in urls if not url.rstrip("/").endswith("/v1")]
    assert not bad, bad


# --- errors ------------------------------------------------------------------------------------------------

# Where the status and the error type sit in each call that writes one: (status index, type index, type keyword).
# error_response and _refuse answer a whole request; ErrorDetail and ItemFailed are one item's error in a 200.
WHOLE = {"error_response": (0, 1, "type_"), "_refuse": (3, 4, "type_")}
ITEM = {"ErrorDetail": (None, None, "type"), "ItemFailed": (None, 0, "type")}


def _literal(node: ast.AST | None) -> Any:
    return node.value if isinstance(node, ast.Constant) else None


def error_types_in_code() -> dict[str, set[tuple[int | None, str]]]:
    """Each literal error type the service writes, with its status where the call names it as a number, by the
    function it is passed to; plus the STATUS table (each core error kind's status and type)."""
    found: dict[str, set[tuple[int | None, str]]] = {"STATUS": set(STATUS.values())}
    for path in (ROOT / "service").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if name not in WHOLE and name not in ITEM:
                continue
            status_at, type_at, keyword = {**WHOLE, **ITEM}[name]
            type_ = next((_literal(kw.value) for kw in node.keywords if kw.arg == keyword), None)
            if type_ is None and type_at is not None and len(node.args) > type_at:
                type_ = _literal(node.args[type_at])
            status = _literal(node.args[status_at]) if status_at is not None and len(node.args) > status_at else None
            if isinstance(type_, str):
                found.setdefault(name, set()).add((status if isinstance(status, int) else None, type_))
    return found


def error_table() -> set[tuple[int, str]]:
    """(status, type) of each row of docs/api.md's error table (`| 404, 405 | `http_error` | ...`)."""
    rows = re.findall(r"^\| ([\d, ]+) \| `(\w+)` \|", API, flags=re.M)
    return {(int(code), t) for codes, t in rows for code in codes.split(",")}


def test_every_error_a_whole_request_gets_has_a_row_in_the_api_doc_error_table():
    found = error_types_in_code()
    # The scan itself works: each way of writing an error type yields some.
    assert set(found) >= {"STATUS", "error_response", "_refuse", "ErrorDetail", "ItemFailed"}, found
    table = error_table()
    missing = []
    for writer in ("STATUS", *WHOLE):
        for status, type_ in found[writer]:
            if not any(t == type_ and status in (None, s) for s, t in table):
                missing.append(f"{status or 'any status'} `{type_}` (from {writer})")
    assert not missing, f"docs/api.md's error table has no row for {missing}"


def test_every_error_one_item_gets_is_in_the_api_doc():
    errors = API[API.index("## Errors"):]
    per_item = errors[errors.index("Per item"):]
    types = {t for writer in ITEM for _, t in error_types_in_code()[writer]}
    missing = sorted(t for t in types if f"`{t}`" not in per_item)
    assert not missing, f"docs/api.md does not list these per-item errors: {missing}"


# --- metrics -----------------------------------------------------------------------------------------------

def test_the_api_doc_metric_table_lists_every_metric_and_no_other():
    from service.runtime.metrics import Metrics

    exposed = {f"{f.name}_total" if f.type == "counter" else f.name for f in Metrics().registry.collect()}
    metrics = API[API.index("## Metrics"):]
    table = set(re.findall(r"^\| `(medix_\w+)` \|", metrics, flags=re.M))
    assert len(table) >= 15
    assert table == exposed, f"undocumented: {sorted(exposed - table)}; no such metric: {sorted(table - exposed)}"


# --- medix-judge compare ------------------------------------------------------------------------------------

def verdicts_in_code() -> set[str]:
    tree = ast.parse((ROOT / "clients" / "evaluation.py").read_text())
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "verdict")
    return {n.value.value for n in ast.walk(fn)
            if isinstance(n, ast.Return) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)}


def test_every_compare_verdict_is_explained():
    verdicts = verdicts_in_code()
    assert "regression" in verdicts and len(verdicts) >= 4
    doc = text(ROOT / "docs" / "ci-evaluation.md")
    explained = doc[doc.index("**Verdicts**"):]
    missing = sorted(v for v in verdicts if f"`{v}`" not in explained)
    assert not missing, f"docs/ci-evaluation.md does not explain the verdicts {missing}"


def test_the_compare_md_example_has_the_shape_compare_writes(tmp_path):
    from clients.judge_cli import app

    for name, scores in (("results_A.jsonl", [1, 1, 1, 0, 1, 1]), ("results_B.jsonl", [0, 1, 0, 0, 1, 0])):
        rows = [{"id": f"q{i}", "task": "T", "rubric": "binary", "score": float(s), "votes": [s]}
                for i, s in enumerate(scores)]
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "compare.md"
    result = CliRunner().invoke(app, ["compare", "--baseline", str(tmp_path / "results_A.jsonl"), "--candidate",
                                      str(tmp_path / "results_B.jsonl"), "--markdown", str(out)])
    assert result.exit_code == 0, result.output
    real = out.read_text().splitlines()
    doc = text(ROOT / "docs" / "ci-evaluation.md")
    example = re.search(r"`compare\.md` \(exit code \d\):\n\n```\n(.*?)```", doc, flags=re.S).group(1).splitlines()

    def shape(lines: list[str]) -> list[str]:
        """Each line's kind: heading, verdict, table row, method note, blank."""
        kinds = {"### MediX judge: `": "heading", "**Verdict: ": "verdict", "|": "row", "Δ = ": "method", "- ": "note"}
        return [next((k for p, k in kinds.items() if line.startswith(p)), "blank" if not line else line)
                for line in lines]

    def squeeze(kinds: list[str]) -> list[str]:
        return [k for i, k in enumerate(kinds) if not i or k != kinds[i - 1]]

    assert squeeze(shape(example)) == squeeze(shape(real)), (example, real)
    assert example[0].startswith("### MediX judge: `results_B.jsonl` against `results_A.jsonl`")
    # The table's header and the methods line are word for word what `compare` writes (default seed, resamples).
    assert next(x for x in example if x.startswith("| task")) == next(x for x in real if x.startswith("| task"))
    assert next(x for x in example if x.startswith("Δ = ")) == next(x for x in real if x.startswith("Δ = "))


# --- the image and the client's dependencies ----------------------------------------------------------------

def test_a_plain_docker_build_builds_the_documented_default_target():
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text(ROOT / "Dockerfile"), flags=re.M | re.I)
    base, name = stages[-1]
    assert (name or base) == "runtime", f"the last stage is {stages[-1]}: a plain `docker build` is not `runtime`"
    assert "target `runtime` (the default" in text(ROOT / "docs" / "operations.md")


def client_dependencies() -> list[str]:
    import tomllib

    deps = tomllib.loads((ROOT / "clients" / "pyproject.toml").read_text())["project"]["dependencies"]
    return [re.match(r"[A-Za-z0-9_.-]+", d).group(0).lower() for d in deps]


@pytest.mark.parametrize("path", ["README.md", "docs/frameworks.md"])
def test_the_client_dependency_lists_name_every_dependency(path):
    doc = text(ROOT / path)
    listing = next(line for line in doc.splitlines() if "pip install ./clients" in line and "httpx" in line)
    if path.endswith("frameworks.md"):  # the sentence runs over two lines
        listing = doc[doc.index(listing):doc.index("no torch", doc.index(listing))]
    missing = [d for d in client_dependencies() if not re.search(rf"(?<![\w-]){re.escape(d)}(?![\w-])", listing)]
    assert not missing, f"{path} leaves out {missing}"
