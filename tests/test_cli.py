"""The command line, through subprocesses: every command, every exit status, JSON that
parses, input conversion and its errors, past runs and the store on real runs, and prune
while another process runs on the same store."""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import enum
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Literal, Optional

import pytest

import flowdeco as fd
from flowdeco._cli._convert import annotation_of, convert
from flowdeco._cli._main import main, parser
from flowdeco._cli._output import UsageError
from flowdeco._core._store import StoreLease

ROOT = Path(__file__).parent.parent

FLOW = """
from pathlib import Path

import flowdeco as fd


@fd.node
def load(source: Path) -> list[int]:
    return [int(x) for x in source.read_text().split()]


@fd.node
def total(load: list[int], scale: int = 1) -> int:
    return sum(load) * scale


@fd.node
def check(load: list[int], fail: bool = False) -> int:
    if fail:
        raise ValueError("asked to fail")
    return len(load)


@fd.node
def report(total: int, check: int) -> str:
    return f"{check} numbers, total {total}"


pipe = fd.Pipeline.from_namespace(globals(), name="numbers")
"""

TYPED = """
import datetime as dt
import enum
from pathlib import Path
from typing import Literal, Optional

import flowdeco as fd


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


@fd.node
def shown(
    count: int,
    ratio: float,
    flag: bool,
    name: str,
    where: Path,
    day: dt.date,
    at: dt.datetime,
    color: Color,
    ids: list[int],
    pair: tuple[int, str],
    options: dict[str, float],
    mode: Literal["fast", "slow"],
    limit: Optional[int] = 5,
    free=None,
) -> str:
    values = (count, ratio, flag, name, where, day, at, color, ids, pair, options, mode, limit, free)
    return repr(values)
"""

# A run that waits, mid-run, until the test lets it go: `first` is large, so a run that
# reuses it reads its body only when `last` needs it, after `hold` ends.
HELD = """
import time
from pathlib import Path

import flowdeco as fd


@fd.node
def first(seed: int) -> bytes:
    return bytes(200_000)


@fd.node
def hold(marker: str) -> int:
    Path(marker).write_text("started")
    deadline = time.monotonic() + 30
    while not Path(marker + ".go").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return len(marker)


@fd.node
def last(hold: int, first: bytes) -> int:
    return hold + len(first)
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "FLOWDECO_STORE"}


def cli(cwd: Path, *args: str, status: int = 0) -> subprocess.CompletedProcess[str]:
    """``python -m flowdeco ARGS`` in ``cwd``, expected to exit with ``status``."""
    done = subprocess.run(
        [sys.executable, "-m", "flowdeco", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == status, (done.returncode, done.stdout, done.stderr)
    return done


def cli_json(cwd: Path, *args: str, status: int = 0) -> Any:
    return json.loads(cli(cwd, *args, "--json", status=status).stdout)


def here(cwd: Path, *args: str, status: int = 0) -> subprocess.CompletedProcess[str]:
    """The command in this process (``main()``), for commands that read only the store:
    a subprocess costs half a second of imports. Each command is also run through a
    subprocess somewhere in this file."""
    out, err = io.StringIO(), io.StringIO()
    previous = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exited:  # what argparse does on a usage error
                code = int(exited.code or 0)
    finally:
        os.chdir(previous)
    done = subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())
    assert code == status, (code, done.stdout, done.stderr)
    return done


def here_json(cwd: Path, *args: str, status: int = 0) -> Any:
    return json.loads(here(cwd, *args, "--json", status=status).stdout)


@pytest.fixture(autouse=True)
def _no_store_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOWDECO_STORE", raising=False)


def start(cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "flowdeco", *args],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    """A directory holding flow.py and its input file, numbers.txt."""
    (tmp_path / "flow.py").write_text(FLOW)
    (tmp_path / "numbers.txt").write_text("1 2 3 4\n")
    old = time.time() - 60  # not hashed again on every run
    os.utime(tmp_path / "numbers.txt", (old, old))
    return tmp_path


# -- the command line itself -------------------------------------------------------------------


def test_console_script_and_module() -> None:
    table = (ROOT / "pyproject.toml").read_text().split("[project.scripts]")[1].split("\n[")[0]
    found = re.search(r'^flowdeco = "(.+)"$', table, re.MULTILINE)
    assert found is not None
    module, _, name = found.group(1).partition(":")
    assert getattr(__import__(module, fromlist=[name]), name) is main
    done = cli(ROOT, "--version")
    assert done.stdout.strip() == f"flowdeco {fd.__version__}"


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["run"],
        ["graph"],
        ["runs"],
        ["runs", "show"],
        ["why"],
        ["cache"],
        ["cache", "ls"],
        ["cache", "show"],
        ["cache", "clear"],
        ["cache", "prune"],
    ],
    ids=lambda c: " ".join(c) or "flowdeco",
)
def test_help_on_every_command(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: flowdeco {' '.join(command)}".rstrip())
    assert "--help" in out


def test_every_option_says_what_it_does() -> None:
    """No option without help text, in any command."""
    pending = [parser()]
    while pending:
        current = pending.pop()
        for action in current._actions:
            if action.choices and isinstance(action.choices, dict):
                pending.extend(action.choices.values())
            elif action.option_strings:
                assert action.help, f"{current.prog} {action.option_strings} has no help"


def test_usage_errors_are_one_line_with_status_2(flow: Path) -> None:
    for args, says in [
        (["run", "nope.py"], "nope.py: no such file"),
        (["run", "flow.py:nope"], "flow.py:nope is nothing, not a flowdeco Pipeline; it has: pipe"),
    ]:
        done = cli(flow, *args, status=2)
        assert done.stderr == f"flowdeco: error: {says}\n", (args, done.stderr)
    for args, says in [
        ([], "the following arguments are required: COMMAND"),
        (["run"], "the following arguments are required: FILE.py[:PIPELINE]"),
        (["run", "flow.py", "--concurrency", "0"], "'0' is not a positive whole number"),
        (["cache", "prune", "--max-size", "lots"], "'lots' is not a size"),
        (["cache", "prune", "--older-than", "7 days"], "'7 days' is not an age"),
        (["cache", "prune"], "say what to prune"),
        (["graph", "flow.py", "--format", "svg"], "svg: not yet, see issue 15"),
    ]:
        done = here(flow, *args, status=2)
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and says in lines[0], (args, done.stderr)


def test_a_file_that_fails_to_import(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("import flowdeco\n\nx = 1\nraise RuntimeError('no')\n")
    done = cli(tmp_path, "run", "broken.py", status=2)
    assert done.stderr == "flowdeco: error: cannot load broken.py: RuntimeError: no (broken.py:4)\n"
    debug = cli(tmp_path, "run", "broken.py", "--debug", status=2)
    assert "Traceback (most recent call last)" in debug.stderr
    (tmp_path / "empty.py").write_text("x = 1\n")
    done = cli(tmp_path, "run", "empty.py", status=2)
    assert "empty.py defines no nodes" in done.stderr


# -- run ------------------------------------------------------------------------------------------


def test_run_prints_outputs_and_why_each_node_ran(flow: Path) -> None:
    first = cli(flow, "run", "flow.py", "-i", "source=numbers.txt")
    assert first.stdout.startswith("report: 4 numbers, total 10\n")
    assert "of flow: ok, 4 succeeded" in first.stdout  # the pipeline of the file's nodes
    assert re.search(
        r"^load +succeeded +[\d.]+ ms +ran: nothing stored$", first.stdout, re.MULTILINE
    )
    again = cli(flow, "run", "flow.py", "-i", "source=numbers.txt")
    assert "ok, 4 cached" in again.stdout
    assert "reused: same code and inputs as run " in again.stdout
    scaled = cli(flow, "run", "flow.py", "-i", "source=numbers.txt", "-i", "scale=3", "-o", "total")
    assert scaled.stdout.startswith("total: 30\n")
    assert "ran: input 'scale' changed" in scaled.stdout
    assert "report" not in scaled.stdout  # only what `total` needs ran
    named = cli(flow, "run", "flow.py:pipe", "-i", "source=numbers.txt", "-o", "total")
    assert "of numbers: ok, 2 cached" in named.stdout  # the Pipeline object, named numbers:
    assert "reused: same code and inputs as an earlier run" in named.stdout  # another's run


def test_run_json(flow: Path) -> None:
    data = cli_json(flow, "run", "flow.py", "-i", "source=numbers.txt", "-o", "total,check")
    assert data["ok"] is True and data["pipeline"] == "flow"
    assert data["outputs"] == {"total": 10, "check": 4}
    assert set(data["nodes"]) == {"load", "total", "check"}
    assert data["nodes"]["load"]["status"] == "succeeded"
    assert data["nodes"]["load"]["why"] == "ran: nothing stored"
    assert data["nodes"]["load"]["attempts"] == 1
    again = cli_json(flow, "run", "flow.py", "-i", "source=numbers.txt", "-o", "total")
    assert again["nodes"]["total"]["outcome"] == "reused"
    assert again["nodes"]["total"]["why"].startswith(
        f"reused: same code and inputs as run {data['run_id']}"
    )


def test_run_converts_inputs_by_annotation(tmp_path: Path) -> None:
    (tmp_path / "typed.py").write_text(TYPED)
    done = cli(
        tmp_path,
        "run",
        "typed.py",
        "-i", "count=3",
        "-i", "ratio=0.5",
        "-i", "flag=yes",
        "-i", "name=x=y",
        "-i", "where=data/in.csv",
        "-i", "day=2026-12-03",
        "-i", "at=2026-12-03T10:15:00",
        "-i", "color=green",
        "-i", "ids=1, 2,3",
        "-i", 'pair=[7, "b"]',
        "-i", 'options={"a": 1}',
        "-i", "mode=slow",
        "-i", "limit=none",
        "-i", "free=as is",
        "--json",
    )  # fmt: skip
    shown = json.loads(done.stdout)["outputs"]["shown"]
    assert shown == (
        "(3, 0.5, True, 'x=y', PosixPath('data/in.csv'), datetime.date(2026, 12, 3), "
        "datetime.datetime(2026, 12, 3, 10, 15), <Color.GREEN: 'green'>, [1, 2, 3], (7, 'b'), "
        "{'a': 1.0}, 'slow', None, 'as is')"
    ).replace("PosixPath", "WindowsPath" if os.name == "nt" else "PosixPath")


def test_a_bad_input_value_is_named(tmp_path: Path) -> None:
    """Through the command line: the one-line error and status 2 (the messages of every
    kind of annotation: below, on the converter)."""
    (tmp_path / "typed.py").write_text(TYPED)
    for given, says in [
        ("count=three", "input 'count': 'three' is not an int"),
        ("color=blue", "input 'color': 'blue' is not a Color (one of RED, GREEN)"),
        ("count", "-i expects NAME=VALUE, got 'count'"),
    ]:
        done = cli(tmp_path, "run", "typed.py", "-i", given, status=2)
        assert done.stderr == f"flowdeco: error: {says}\n"


class _Color(enum.Enum):
    RED = "red"
    GREEN = "green"


@pytest.mark.parametrize(
    ("annotation", "text", "says"),
    [
        (int, "three", "'three' is not an int"),
        (float, "half", "'half' is not a float"),
        (bool, "maybe", "'maybe' is not a bool (write true or false)"),
        (dt.date, "2026-13-01", "'2026-13-01' is not a date (write ISO 8601, such as 2026-12-03)"),
        (dt.datetime, "noon", "'noon' is not a datetime (write ISO 8601"),
        (_Color, "blue", "'blue' is not a _Color (one of RED, GREEN)"),
        (list[int], "1,two", "'two' is not an int"),
        (tuple[int, str], "[1]", "'[1]' has 1 items, expected 2"),
        (dict[str, int], "[1]", "[1] is not a JSON object"),
        (dict[str, int], "{nope", "'{nope' is not valid JSON"),
        (Literal["fast", "slow"], "medium", "'medium' is not one of 'fast', 'slow'"),
        (Optional[int], "lots", "'lots' is none of int | None"),  # noqa: UP045 - both
        (int | None, "lots", "'lots' is none of int | None"),
        (decimal.Decimal, "x", "'x' is not a Decimal"),
    ],
    ids=lambda v: v if isinstance(v, str) else getattr(v, "__name__", str(v)),
)
def test_conversion_errors_say_what_was_expected(annotation: Any, text: str, says: str) -> None:
    with pytest.raises(UsageError) as raised:
        convert("x", text, annotation)
    assert str(raised.value).startswith(f"input 'x': {says}")


def test_conversion_of_json_values_and_unresolvable_annotations() -> None:
    assert convert("x", [1, "2"], list[int]) == [1, 2]
    assert convert("x", 3, float) == 3.0 and type(convert("x", 3, float)) is float
    assert convert("x", None, Optional[int]) is None  # noqa: UP045 - the old spelling
    assert convert("x", "7", Any) == "7"
    with pytest.raises(UsageError, match="'x': True is not an int"):
        convert("x", True, int)
    with pytest.raises(UsageError, match="'x': 5 is not a string"):
        convert("x", 5, str)

    def node(value: int) -> None:
        """Its annotation names nothing: text from the command line cannot be converted."""

    node.__annotations__ = {"value": "Missing"}
    pipe = fd.Pipeline([node])
    with pytest.raises(UsageError, match="its annotation 'Missing' cannot be evaluated"):
        convert("value", "1", annotation_of(pipe, "value"))


def test_inputs_file_and_missing_or_unknown_inputs(flow: Path) -> None:
    (flow / "inputs.json").write_text(json.dumps({"source": "numbers.txt", "scale": 2}))
    done = cli(
        flow, "run", "flow.py", "--inputs-file", "inputs.json", "-i", "scale=5", "-o", "total"
    )
    assert done.stdout.startswith("total: 50\n")  # -i wins over the file
    (flow / "bad.json").write_text("[1, 2]")
    done = cli(flow, "run", "flow.py", "--inputs-file", "bad.json", status=2)
    assert "must hold a JSON object of inputs" in done.stderr
    done = cli(flow, "run", "flow.py", status=2)
    assert done.stderr == (
        "flowdeco: error: missing required input 'source' (needed by 'load'); pass -i source=VALUE\n"
    )
    done = cli(flow, "run", "flow.py", "-i", "source=numbers.txt", "-i", "scael=2", status=2)
    assert "'scael' (did you mean 'scale'?)" in done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_a_failed_node_exits_1_and_resume_reuses_what_finished(flow: Path) -> None:
    args = ["run", "flow.py", "-i", "source=numbers.txt"]
    failed = cli(flow, *args, "-i", "fail=true", status=1)
    assert re.search(
        r"^check +failed .* failed: ValueError: asked to fail$", failed.stdout, re.MULTILINE
    )
    assert failed.stderr.endswith(
        "flowdeco: error: node 'check' failed: ValueError: asked to fail\n"
    )
    assert "Traceback" not in failed.stderr
    debug = cli(flow, *args, "-i", "fail=true", "--debug", status=1)
    assert 'raise ValueError("asked to fail")' in debug.stderr
    going = cli_json(flow, *args, "-i", "fail=1", "--keep-going", status=1)
    assert going["ok"] is False and going["error"] is None  # nothing raised: it went on
    assert going["nodes"]["total"]["status"] in ("succeeded", "cached")
    assert going["nodes"]["report"]["status"] == "skipped"
    assert going["nodes"]["check"]["error"] == "ValueError: asked to fail"
    resumed = cli_json(flow, *args, "--resume", "last", "--no-cache")
    assert resumed["nodes"]["load"]["why"].startswith("reused: finished in run ")
    assert resumed["nodes"]["check"]["status"] == "succeeded"
    fresh = cli_json(flow, *args, "--no-cache")
    assert {n["status"] for n in fresh["nodes"].values()} == {"succeeded"}
    done = cli(flow, *args, "--resume", "20990101T000000.000000000Z-00000000", status=2)
    assert "has no run '20990101T000000.000000000Z-00000000' to resume" in done.stderr


def test_ctrl_c_exits_130(tmp_path: Path) -> None:
    (tmp_path / "held.py").write_text(HELD)
    marker = tmp_path / "m"
    running = start(tmp_path, "run", "held.py", "-i", "seed=1", "-i", f"marker={marker}")
    wait_for(marker)
    running.send_signal(signal.SIGINT)
    time.sleep(0.2)
    (tmp_path / "m.go").touch()  # a thread cannot be stopped: let the node return
    out, err = running.communicate(timeout=30)
    assert running.returncode == 130, (out, err)
    assert "flowdeco: interrupted; finished nodes are checkpointed" in err


def test_trace_to_the_console_keeps_json_on_stdout(flow: Path) -> None:
    done = cli(flow, "run", "flow.py", "-i", "source=numbers.txt", "--trace", "console", "--json")
    assert json.loads(done.stdout)["ok"] is True
    assert '"name": "flowdeco.run flow"' in done.stderr
    assert '"name": "flow.load"' in done.stderr


def test_executor_and_progress(tmp_path: Path) -> None:
    (tmp_path / "where.py").write_text(
        "import os\nimport flowdeco as fd\n\n\n"
        "@fd.node(cache=False)\ndef pid() -> int:\n    return os.getpid()\n"
    )
    running = start(tmp_path, "run", "where.py", "--executor", "process", "--json", "--progress")
    out, err = running.communicate(timeout=60)
    assert running.returncode == 0, err
    assert json.loads(out)["outputs"]["pid"] != running.pid  # it ran in a worker process
    assert "[1/1] 0 reused, 0 running" in err  # progress on stderr, JSON alone on stdout
    here_err = cli(tmp_path, "run", "where.py", "--executor", "bogus", status=2).stderr
    assert "argument --executor: invalid choice: 'bogus'" in here_err


# -- graph ------------------------------------------------------------------------------------------


def test_graph(flow: Path) -> None:
    mermaid = cli(flow, "graph", "flow.py").stdout
    assert mermaid.splitlines()[0] == "flowchart TD"
    assert 'i0[/"source"/]' in mermaid and 'n0["load"]' in mermaid
    assert "i0 --> n0" in mermaid and "n1 --> n3" in mermaid
    assert "class i1,i2 optional" in mermaid  # scale and fail have defaults
    dot = cli(flow, "graph", "flow.py:pipe", "--format", "dot", "-o", "total").stdout
    assert dot.startswith('digraph "numbers" {')
    assert '"load" -> "total";' in dot and '"scale" [shape=parallelogram, style=dashed];' in dot
    assert "check" not in dot and "report" not in dot
    assert "no such node" in cli(flow, "graph", "flow.py", "-o", "nope", status=2).stderr


# -- runs, runs show, why -------------------------------------------------------------------------


def test_runs_show_and_why_on_real_runs(flow: Path) -> None:
    args = ["run", "flow.py", "-i", "source=numbers.txt"]
    first = cli_json(flow, *args)["run_id"]
    source = (flow / "flow.py").read_text()
    (flow / "flow.py").write_text(source.replace("sum(load) * scale", "sum(load) * scale * 1"))
    second = cli_json(flow, *args)["run_id"]
    listed = cli(flow, "runs").stdout.splitlines()
    assert listed[0].split() == ["run", "pipeline", "started", "took", "outcome", "nodes"]
    assert listed[1].startswith(first) and "flow" in listed[1] and "4 succeeded" in listed[1]
    assert listed[2].startswith(second) and " ok " in listed[2]
    runs = here_json(flow, "runs")
    assert [r["run_id"] for r in runs] == [first, second]
    assert runs[1]["counts"] == {"cached": 3, "succeeded": 1}  # report: total's value is the same
    assert here_json(flow, "runs", "--pipeline", "flow", "-n", "1")[0]["run_id"] == second
    assert here_json(flow, "runs", "--pipeline", "other") == []

    shown = cli(flow, "runs", "show", second[-8:]).stdout
    assert f"run       {second}" in shown and "outcome   ok" in shown
    assert re.search(r"^total +succeeded .* ran: its code changed$", shown, re.MULTILINE)
    assert f"reused: same code and inputs as run {first}" in shown  # load
    data = here_json(flow, "runs", "show", "last")
    assert data["nodes"]["total"]["why"] == "ran: its code changed"
    assert data["nodes"]["report"]["why"].startswith(f"reused: same code and inputs as run {first}")

    why = cli(flow, "why", "last", "total").stdout
    assert why.splitlines()[:2] == [
        f"total in run {second} of flow: succeeded",
        "ran: its code changed",
    ]
    assert "from the run record" in why
    reused = here_json(flow, "why", second, "load")
    assert reused["outcome"] == "reused" and reused["compared_with"] == first
    assert reused["not_recorded"] is None
    assert "recorded no node 'nope'" in here(flow, "why", "last", "nope", status=2).stderr
    assert "has no run 'zzz'" in here(flow, "runs", "show", "zzz", status=2).stderr
    empty = flow / "elsewhere"
    assert here(flow, "runs", "--store", str(empty)).stdout == f"no runs recorded in {empty}\n"


# -- cache --------------------------------------------------------------------------------------------


def test_cache_ls_show_clear(flow: Path) -> None:
    cli(flow, "run", "flow.py", "-i", "source=numbers.txt")
    listed = here_json(flow, "cache", "ls")
    assert sorted(n["node"] for c in listed for n in c["nodes"]) == [
        "check",
        "load",
        "report",
        "total",
    ]
    text = cli(flow, "cache", "ls").stdout
    assert text.splitlines()[0].split() == [
        "key",
        "node",
        "pipeline",
        "size",
        "written",
        "last",
        "used",
    ]
    assert text.splitlines()[-1].startswith("4 checkpoints, ")
    report = next(c for c in listed if c["nodes"][0]["node"] == "report")
    shown = cli(flow, "cache", "show", report["key"][:10]).stdout
    assert f"key        {report['key']}" in shown
    assert "value      '4 numbers, total 10'" in shown
    assert "node       report" in shown and "pipeline   flow" in shown
    assert here_json(flow, "cache", "show", report["key"])["value"] == "'4 numbers, total 10'"
    assert "has no checkpoint 'ffff'" in here(flow, "cache", "show", "ffff", status=2).stderr
    cleared = cli(flow, "cache", "clear").stdout
    assert cleared.startswith("removed 4 checkpoints (")
    assert here_json(flow, "cache", "ls") == []
    assert len(here_json(flow, "runs")) == 1  # records stay
    cli(flow, "cache", "clear", "--runs")
    assert here_json(flow, "runs") == []


def test_prune(flow: Path) -> None:
    args = ["run", "flow.py", "-i", "source=numbers.txt"]
    for scale in ("1", "2", "3"):
        cli(flow, *args, "-i", f"scale={scale}")
    # 4 + 2 + 2 checkpoints: each scale gives total and report new values.
    assert len(here_json(flow, "cache", "ls")) == 8
    dry = here_json(flow, "cache", "prune", "--keep-runs", "1", "--dry-run")
    assert dry["dry_run"] is True and len(dry["removed"]["runs"]) == 2
    assert len(dry["removed"]["checkpoints"]) == 4  # the first two runs' total and report
    assert len(here_json(flow, "cache", "ls")) == 8  # a dry run removes nothing
    done = cli(flow, "cache", "prune", "--keep-runs", "1").stdout
    assert done.startswith("removed 4 checkpoints (") and "and 2 run records" in done
    assert len(here_json(flow, "runs")) == 1
    kept = cli_json(flow, *args, "-i", "scale=3")
    assert {n["status"] for n in kept["nodes"].values()} == {"cached"}
    sized = here_json(flow, "cache", "prune", "--max-size", "1")
    assert sized["kept"]["checkpoints"] == 0 and sized["removed"]["runs"] == []
    cli(flow, *args)
    assert here_json(flow, "cache", "prune", "--older-than", "1h")["removed"]["checkpoints"] == []
    gone = here_json(flow, "cache", "prune", "--older-than", "0")
    assert len(gone["removed"]["checkpoints"]) == 4 and len(gone["removed"]["runs"]) == 3
    nowhere = flow / "nowhere"
    out = here(flow, "cache", "prune", "--older-than", "7d", "--store", str(nowhere)).stdout
    assert out == f"nothing to prune: {nowhere} does not exist\n"
    assert not nowhere.exists()


# -- prune while another process runs on the same store -----------------------------------------


@pytest.fixture
def held(tmp_path: Path) -> Path:
    """held.py, and a store holding one finished run of it."""
    (tmp_path / "held.py").write_text(HELD)
    (tmp_path / "m0.go").touch()
    cli(tmp_path, "run", "held.py", "-i", "seed=1", "-i", f"marker={tmp_path / 'm0'}")
    return tmp_path


def _keys(cwd: Path) -> set[str]:
    return {c["key"] for c in here_json(cwd, "cache", "ls")}


def test_prune_refuses_while_a_cli_run_is_live_and_the_run_finishes(held: Path) -> None:
    before = _keys(held)
    marker = held / "m-live"
    running = start(held, "run", "held.py", "-i", "seed=1", "-i", f"marker={marker}", "--json")
    wait_for(marker)
    for command in (["prune", "--older-than", "0"], ["clear"]):
        refused = cli(held, "cache", *command, status=2)
        assert "a run is using .flowdeco (it holds the store's lock)" in refused.stderr
        assert "nothing was removed" in refused.stderr
    (held / "m-live.go").touch()
    out, err = running.communicate(timeout=30)
    assert running.returncode == 0, err
    result = json.loads(out)
    assert result["outputs"]["last"] == len(str(marker)) + 200_000  # `first` read after the refusal
    assert result["nodes"]["first"]["status"] == "cached"
    assert before < _keys(held)  # nothing removed: the run added hold's and last's
    again = cli_json(held, "run", "held.py", "-i", "seed=1", "-i", f"marker={marker}")
    assert {n["status"] for n in again["nodes"].values()} == {"cached"}  # every file intact


def test_prune_waits_for_a_live_run_with_wait(held: Path) -> None:
    marker = held / "m-wait"
    running = start(held, "run", "held.py", "-i", "seed=1", "-i", f"marker={marker}")
    wait_for(marker)
    pruning = start(held, "cache", "prune", "--older-than", "0", "--wait", "30", "--json")
    time.sleep(0.5)
    assert pruning.poll() is None  # waiting for the run
    (held / "m-wait.go").touch()
    _, err = running.communicate(timeout=30)
    assert running.returncode == 0, err
    pruned, err = pruning.communicate(timeout=30)
    assert pruning.returncode == 0, err
    assert json.loads(pruned)["kept"]["checkpoints"] == 0  # then everything went


def test_prune_refuses_while_a_python_api_run_is_live(tmp_path: Path) -> None:
    """A run through the Python API holds the store's lease from its first lookup until
    everything is written: prune refuses, naming the run and its process."""
    (tmp_path / "held.py").write_text(HELD)
    marker = tmp_path / "m-api"
    script = (
        "import sys; sys.path.insert(0, '.'); import flowdeco as fd, held; "
        f"r = fd.Pipeline.from_module(held).run(inputs={{'seed': 1, 'marker': {str(marker)!r}}}); "
        "print(r['last'])"
    )
    running = subprocess.Popen(
        [sys.executable, "-c", script], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, text=True
    )
    wait_for(marker)
    deadline = time.monotonic() + 10
    while [r["outcome"] for r in here_json(tmp_path, "runs")] != ["running"]:
        assert time.monotonic() < deadline, "the live run's record never showed"
        time.sleep(0.05)
    refused = cli(tmp_path, "cache", "prune", "--older-than", "0", status=2)
    assert "a run is using .flowdeco (it holds the store's lock)" in refused.stderr
    assert f"of held (pid {running.pid})" in refused.stderr
    assert "nothing was removed" in refused.stderr
    # --force overrides what records say, never the lock: it refuses all the same.
    forced = cli(tmp_path, "cache", "prune", "--older-than", "0", "--force", status=2)
    assert "it holds the store's lock" in forced.stderr
    (tmp_path / "m-api.go").touch()
    out, _ = running.communicate(timeout=30)
    assert running.returncode == 0 and int(out) == len(str(marker)) + 200_000
    assert len(_keys(tmp_path)) == 3


# -- the lease itself -------------------------------------------------------------------------------


@pytest.mark.skipif(not StoreLease.supported, reason="no flock on this platform")
def test_the_lease_shared_and_exclusive(tmp_path: Path) -> None:
    store = fd.FileStore(tmp_path / "store")
    with StoreLease.shared(store), StoreLease.shared(store):  # runs share it
        assert StoreLease.exclusive(store.path) is None
    held = StoreLease.exclusive(store.path)
    assert held is not None
    waited = threading.Event()
    taken = threading.Event()

    def run() -> None:
        with StoreLease.shared(store, on_wait=waited.set):
            taken.set()

    thread = threading.Thread(target=run)
    thread.start()
    assert waited.wait(5) and not taken.wait(0.2)  # a run waits while maintenance works
    held.release()
    held.release()  # again: nothing
    assert taken.wait(5)
    thread.join()
    assert StoreLease.shared(fd.MemoryStore())._fd is None  # nothing to lock


def test_json_everywhere_parses(flow: Path) -> None:
    cli(flow, "run", "flow.py", "-i", "source=numbers.txt")
    for command in (["runs"], ["runs", "show", "last"], ["why", "last", "total"], ["cache", "ls"]):
        assert here_json(flow, *command) is not None


# -- docs/cli.md, as written -----------------------------------------------------------------------

_BLOCK = re.compile(
    r"(?:<!-- not runnable: (?P<reason>[^\n]*?) -->\n)?(?P<indent>[ ]*)```console\n"
    r"(?P<body>.*?)\n(?P=indent)```",
    re.DOTALL,
)


@pytest.mark.skipif(os.name == "nt", reason="the page's commands are POSIX shell")
def test_the_cli_page_runs_as_written(tmp_path: Path) -> None:
    """Each ``$`` line of docs/cli.md runs, in order, from a copy of the checkout's
    examples, with the exit status it states (``# exit N``, else 0); each line shown under
    it that holds no digit (no run id, time or size) is in what it prints."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    scripts = tmp_path / "bin"
    scripts.mkdir()
    (scripts / "flowdeco").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m flowdeco "$@"\n')
    (scripts / "flowdeco").chmod(0o755)
    env = {**_env(), "PATH": f"{scripts}{os.pathsep}{os.environ['PATH']}"}
    ran = 0
    for block in _BLOCK.finditer((ROOT / "docs" / "cli.md").read_text()):
        if block["reason"] is not None:
            assert block["reason"].strip(), "a block marked not runnable says why"
            continue
        for command, shown in _commands(block["body"]):
            line, _, comment = command.partition("  # ")
            stated = re.match(r"exit (\d+)", comment)
            done = subprocess.run(
                ["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True,
                timeout=60, check=False,
            )  # fmt: skip
            assert done.returncode == (int(stated[1]) if stated else 0), (line, done.stderr)
            printed = {" ".join(x.split()) for x in (done.stdout + done.stderr).splitlines()}
            for expected in shown:
                if not re.search(r"\d|\.\.\.", expected):
                    assert " ".join(expected.split()) in printed, (line, expected)
            ran += 1
    assert ran >= 15


def _commands(body: str) -> list[tuple[str, list[str]]]:
    """The ``$`` lines of a console block, each with the lines shown under it."""
    found: list[tuple[str, list[str]]] = []
    for raw in body.splitlines():
        line = raw.strip()
        if line.startswith("$ "):
            found.append((line[2:], []))
        elif found and line:
            found[-1][1].append(line)
    return found
