"""README.md against the code it describes.

- Every `simdistill` command line in a code block, and every synopsis in the command table, parses with
  the CLI's real parser (`simdistill_ros.cli.build_parser` for the command names, each subcommand's
  `add_arguments` for its options), placeholders substituted; every `--option` also in inline code spans
  must be one the parser has, spelled out (argparse would accept an abbreviation).
- The parameter table equals config/detector.param.yaml and the node's declared parameters
  (simdistill_ros/ros/params.py SPECS): names in order, defaults with their types, ranges, and which ones
  change at run time.
- The topic table names the params file's camera topics, the topics of docs/ros.md, and the topics the
  node publishes and subscribes in node.py. The launch-argument table equals launch/detector.launch.py.
- The one-GPU recipe's accumulation keeps the paper's global batch of r50_nuscenes.yaml.
- CI (.ci/run) runs the README's test command verbatim, every test has a time limit (pytest-timeout,
  setup.cfg), and the README's links to files point at files.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from simdistill_ros.cli import COMMANDS, build_parser
from simdistill_ros.ros.params import SPECS

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$")


# -- reading the README --
def section(text: str, heading: str) -> str:
    """The text under a markdown heading (exact title), up to the next heading of the same or a higher level."""
    m = re.search(rf"^(#+) {re.escape(heading)}\n", text, re.MULTILINE)
    assert m, f"README.md has no heading {heading!r}"
    level = len(m.group(1))
    rest = text[m.end():]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


def table_rows(text: str) -> list[list[str]]:
    """Body rows of the first markdown table in `text`, cells stripped, `\\|` unescaped."""
    all_lines = text.splitlines()
    start = next((i for i, ln in enumerate(all_lines) if ln.startswith("|")), len(all_lines))
    lines = []
    for ln in all_lines[start:]:
        if not ln.startswith("|"):
            break
        lines.append(ln)
    assert len(lines) >= 3, "no table found"
    rows = []
    for ln in lines[2:]:
        cells = re.split(r"(?<!\\)\|", ln.strip()[1:-1])
        rows.append([c.strip().replace("\\|", "|") for c in cells])
    return rows


def code_span(cell: str) -> str:
    m = re.fullmatch(r"`([^`]*)`", cell)
    assert m, f"expected one code span, got {cell!r}"
    return m.group(1)


def outside_fences(text: str) -> str:
    return FENCE.sub("", text)


def block_commands(text: str) -> list[tuple[str, list[str]]]:
    """(line, arguments after `simdistill`) for every simdistill invocation in the bash code blocks:
    `simdistill ...`, `.venv/bin/simdistill ...` and `... -m simdistill_ros.cli ...` (torchrun)."""
    found = []
    for lang, body in FENCE.findall(text):
        if lang not in ("bash", "sh"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            segments: list[list[str]] = [[]]
            for tok in tokens:
                if tok in ("&&", "||", ";", "|"):
                    segments.append([])
                else:
                    segments[-1].append(tok)
            for seg in segments:
                for i, tok in enumerate(seg):
                    if tok == "simdistill" or tok.endswith("/simdistill"):
                        found.append((line.strip(), seg[i + 1:]))
                        break
                    if tok == "-m" and i + 1 < len(seg) and seg[i + 1] == "simdistill_ros.cli":
                        found.append((line.strip(), seg[i + 2:]))
                        break
    return found


# -- synopses of the command table: [optional], (a | b) groups, a|b value alternatives, PLACEHOLDERS --
@dataclass(frozen=True)
class Item:
    kind: str  # "tok" (alternatives of one token), "opt" ([...]), "grp" ((... | ...))
    value: Any


def parse_synopsis(tokens: list[str], i: int = 0, closer: str | None = None) -> tuple[list[list[Item]], int]:
    alts: list[list[Item]] = [[]]
    while i < len(tokens):
        tok = tokens[i]
        if tok == closer:
            return alts, i + 1
        if tok in ("[", "("):
            sub, i = parse_synopsis(tokens, i + 1, "]" if tok == "[" else ")")
            alts[-1].append(Item("opt" if tok == "[" else "grp", sub))
            continue
        assert tok not in ("]", ")"), f"unbalanced {tok!r} in a synopsis"
        if tok == "|":
            alts.append([])
        else:
            alts[-1].append(Item("tok", tok.split("|")))
        i += 1
    assert closer is None, f"missing {closer!r} in a synopsis"
    return alts, i


def width(alts: list[list[Item]]) -> int:
    n = len(alts)
    for alt in alts:
        for item in alt:
            n = max(n, len(item.value) if item.kind == "tok" else width(item.value))
    return n


def expand(alts: list[list[Item]], k: int, optional: bool) -> list[str]:
    """Variant k: alternative min(k, last) of every choice; bracketed parts only when `optional`."""
    out: list[str] = []
    for item in alts[min(k, len(alts) - 1)]:
        if item.kind == "tok":
            out.append(item.value[min(k, len(item.value) - 1)])
        elif item.kind == "grp" or optional:
            out.extend(expand(item.value, k, optional))
    return out


def synopsis_variants(synopsis: str) -> list[list[str]]:
    tokens = re.sub(r"([\[\]()])", r" \1 ", synopsis).split()
    assert tokens[0] == "simdistill", synopsis
    alts, _ = parse_synopsis(tokens[1:])
    variants = [expand(alts, k, True) for k in range(width(alts))] + [expand(alts, 0, False)]
    return [v for i, v in enumerate(variants) if v not in variants[:i]]


# -- the real parser --
def command_names() -> set[str]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def subcommand_parser(name: str) -> argparse.ArgumentParser:
    """What `simdistill NAME` parses with (cli.main builds it the same way)."""
    parser = argparse.ArgumentParser(prog=f"simdistill {name}")
    importlib.import_module(COMMANDS[name][0]).add_arguments(parser)
    return parser


def option_actions(parser: argparse.ArgumentParser, args: list[str]) -> dict[str, argparse.Action]:
    """Option string -> action of the parser and of the subparsers `args` descend into."""
    actions: dict[str, argparse.Action] = {}
    p = parser
    while True:
        actions.update({o: a for a in p._actions for o in a.option_strings})
        sub = next((a for a in p._actions if isinstance(a, argparse._SubParsersAction)), None)
        chosen = next((t for t in args if t in sub.choices), None) if sub is not None else None
        if chosen is None:
            return actions
        p, args = sub.choices[chosen], args[args.index(chosen) + 1:]


def substitute(args: list[str], actions: dict[str, argparse.Action]) -> list[str]:
    """A placeholder becomes a value its option accepts: a number, the first choice, or a path."""
    out, option = [], None
    for tok in args:
        if tok.startswith("-"):
            option = actions.get(tok.split("=")[0])
            out.append(tok)
        elif PLACEHOLDER.match(tok):
            if option is not None and option.choices:
                out.append(str(list(option.choices)[0]))
            elif option is not None and option.type in (int, float):
                out.append("2")
            else:
                out.append("x")
        else:
            out.append(tok)
    return out


def check_options(line: str, args: list[str]) -> argparse.ArgumentParser:
    assert args, f"{line!r}: no command after simdistill"
    name = args[0]
    assert name in command_names(), f"{line!r}: the CLI has no command {name!r} (it has {sorted(command_names())})"
    parser = subcommand_parser(name)
    actions = option_actions(parser, args[1:])
    for tok in args[1:]:
        if tok.startswith("--"):
            assert tok.split("=")[0] in actions, f"{line!r}: `simdistill {name}` has no option {tok} " \
                                                 f"(it has {sorted(actions)})"
    return parser


def check_parses(line: str, args: list[str]) -> None:
    parser = check_options(line, args)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            parser.parse_args(substitute(args[1:], option_actions(parser, args[1:])))
        except SystemExit:
            pytest.fail(f"{line!r} does not parse: {err.getvalue().strip()}")


COMMAND_TABLE = [code_span(row[0]) for row in table_rows(section(README, "Commands"))]
BLOCK_COMMANDS = block_commands(README)
INLINE = [m for m in re.findall(r"`(simdistill [^`]*)`", outside_fences(README))
          if m.replace("\\|", "|") not in COMMAND_TABLE]


def test_the_readme_has_the_commands_it_promises() -> None:
    assert len(COMMAND_TABLE) >= 10 and len(BLOCK_COMMANDS) >= 12 and len(INLINE) >= 3
    assert ["demo"] in [args for _, args in BLOCK_COMMANDS]
    assert {s.split()[1] for s in COMMAND_TABLE} >= set(COMMANDS), "every command of the CLI is in the table"


@pytest.mark.parametrize("synopsis", COMMAND_TABLE, ids=lambda s: " ".join(s.split()[:3]))
def test_command_table_synopsis_parses(synopsis: str) -> None:
    variants = synopsis_variants(synopsis)
    for args in variants:
        check_parses(synopsis, args)


@pytest.mark.parametrize("line,args", BLOCK_COMMANDS, ids=[line[:60] for line, _ in BLOCK_COMMANDS])
def test_code_block_command_parses(line: str, args: list[str]) -> None:
    check_parses(line, args)


@pytest.mark.parametrize("span", INLINE, ids=lambda s: s[:50])
def test_inline_command_names_a_real_command_and_options(span: str) -> None:
    check_options(span, span.split()[1:])


def test_a_wrong_command_or_option_fails_the_check() -> None:
    with pytest.raises(AssertionError, match="has no command 'frobnicate'"):
        check_parses("simdistill frobnicate", ["frobnicate"])
    with pytest.raises(AssertionError, match="has no option --check"):
        check_parses("simdistill export --check C", ["export", "--check", "C", "--out", "F"])
    with pytest.raises(pytest.fail.Exception, match="does not parse"):
        check_parses("simdistill export --out F", ["export", "--out", "F"])  # --checkpoint is required
    assert synopsis_variants("simdistill x --a A|B [--c] (--d | --e E)") == [
        ["x", "--a", "A", "--c", "--d"], ["x", "--a", "B", "--c", "--e", "E"], ["x", "--a", "A", "--d"]]


# -- parameters --
def readme_parameters() -> list[tuple[str, Any, Any, str]]:
    rows = table_rows(section(README, "Parameters"))
    return [(code_span(r[0]), yaml.safe_load(code_span(r[1])), yaml.safe_load(code_span(r[2])) if r[2] else None, r[3])
            for r in rows]


def test_parameter_table_equals_the_params_file_and_the_declared_parameters() -> None:
    table = readme_parameters()
    param_file = yaml.safe_load((REPO / "config" / "detector.param.yaml").read_text())["/**"]["ros__parameters"]
    assert [name for name, *_ in table] == [s.name for s in SPECS] == list(param_file)
    for (name, default, rng, meaning), spec in zip(table, SPECS):
        for source, value in (("params.py", spec.default), ("detector.param.yaml", param_file[name])):
            assert default == value and type(default) is type(value), \
                f"README default of {name!r} is {default!r}, {source} says {value!r}"
        assert rng == (None if spec.range is None else list(spec.range[:2])), f"range of {name!r}"
        assert ("changeable at run time" in meaning) == (not spec.read_only), f"run-time note of {name!r}"


# -- topics --
def topic_names(cell: str) -> list[str]:
    """Code spans of a topic cell that are names, not parameters (a cell may name its parameter)."""
    params = {s.name for s in SPECS}
    return [t for t in re.findall(r"`([~/a-z][\w/~]*)`", cell) if t not in params]


def node_topics() -> tuple[set[str], set[str]]:
    src = (REPO / "simdistill_ros" / "ros" / "node.py").read_text()
    pubs = set(re.findall(r"create_publisher\([^\n]*?\"([~/][\w/]+)\"", src))
    subs = set(re.findall(r"create_subscription\(tf_type, \"([~/][\w/]+)\"", src))
    return pubs, subs


def test_topic_table_matches_docs_the_params_file_and_the_node() -> None:
    rows = table_rows(section(README, "Topics"))
    readme = {d: {t for r in rows if r[0] == d for t in topic_names(r[1])} for d in ("in", "out")}
    docs_rows = table_rows(section((REPO / "docs" / "ros.md").read_text(), "Topics"))
    docs = {d: {t for r in docs_rows if r[0] == d for t in topic_names(r[1])} for d in ("in", "out")}
    params = {s.name: s.default for s in SPECS}
    pubs, subs = node_topics()
    assert readme["out"] == docs["out"] == pubs == {"~/detections", "~/markers", "/diagnostics",
                                                     "~/debug/latency_ms", "~/debug/inference_ms"}
    assert readme["in"] == set(params["image_topics"]) | set(params["camera_info_topics"]) | subs
    assert subs == {"/tf", "/tf_static"} and subs <= docs["in"]
    assert docs["in"] - subs <= set(params["image_topics"])  # docs/ros.md names the first default


def launch_arguments() -> dict[str, str | None]:
    """DeclareLaunchArgument name -> literal default_value (None: not a literal) of launch/detector.launch.py,
    read with ast: launch_ros is not installable here, so the file cannot be imported."""
    tree = ast.parse((REPO / "launch" / "detector.launch.py").read_text())
    out: dict[str, str | None] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DeclareLaunchArgument":
            default = next((k.value for k in node.keywords if k.arg == "default_value"), None)
            out[node.args[0].value] = default.value if isinstance(default, ast.Constant) else None
    return out


def test_launch_argument_table_equals_the_launch_file() -> None:
    rows = table_rows(section(README, "In a ROS 2 install (Humble, Jazzy, Kilted), with colcon"))
    table = {code_span(name): default for name, default in rows}
    launch = launch_arguments()
    assert set(table) == set(launch)
    assert table["params_file"] == "the installed `config/detector.param.yaml`" and launch["params_file"] is None
    for name, value in launch.items():
        if value is not None:
            assert table[name] == (f"`{value}`" if value else "empty" if name != "model" else
                                   "empty: the bundled model"), name


def test_the_one_gpu_recipe_keeps_the_paper_batch() -> None:
    from training.config import load_train_config

    schedule = load_train_config("r50_nuscenes").schedule
    assert schedule.batch_size * schedule.accumulate * 8 == 48  # the README's "3 per GPU x 2 x 8 GPUs"
    assert "set `schedule.accumulate: 16`" in README and schedule.batch_size * 16 == 48


# -- the quick start, CI and links --
def test_ci_runs_the_readme_test_command_verbatim() -> None:
    quick = section(README, "Quick start: two commands")
    commands = [body.strip() for lang, body in FENCE.findall(quick) if lang == "bash"]
    assert commands[0] == "bash scripts/setup.sh && .venv/bin/simdistill demo"
    assert commands[1] == "bash scripts/setup.sh && .venv/bin/python -m pytest -q -rs"
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert commands[1] in ci, ".ci/run must run the README's test command verbatim"


def test_every_test_has_a_time_limit(request: pytest.FixtureRequest) -> None:
    """pytest-timeout is installed (test extra) and setup.cfg gives each test 600 s, so a hung child
    process fails its test instead of eating CI's time."""
    assert request.config.pluginmanager.hasplugin("timeout")
    assert float(request.config.getini("timeout")) == 600


def test_links_to_files_exist() -> None:
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    assert links
    missing = [link for link in links if "://" not in link and not (REPO / link).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
