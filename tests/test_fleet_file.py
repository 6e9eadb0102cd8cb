"""Fleet files: parsing, validation and port planning, without starting servers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmsim.pool.fleet import FleetError, load_fleet
from llmsim.settings.sources import ConfigError, load_settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "fleet.toml"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("LLMSIM_", "VLLM_")) or name == "API_KEY":
            monkeypatch.delenv(name)


def fleet_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMSIM_")}
    env["COLUMNS"] = "250"
    return subprocess.run(
        [sys.executable, "-m", "llmsim", "fleet", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    return path


def errors_of(path: Path) -> list[str]:
    with pytest.raises(FleetError) as caught:
        load_fleet(path)
    prefix = f"{path}: "
    assert all(line.startswith(prefix) for line in caught.value.lines)
    return [line[len(prefix) :] for line in caught.value.lines]


# -- the example --------------------------------------------------------------------


def test_the_example_fleet_models_a_heterogeneous_pool() -> None:
    plan = load_fleet(EXAMPLE)
    by_name = {instance.name: instance.settings for instance in plan.instances}
    assert list(by_name) == ["fast-1", "fast-2", "slow", "lora", "flaky"]
    assert [instance.settings.port for instance in plan.instances] == list(range(8100, 8105))
    fast, slow = by_name["fast-1"], by_name["slow"]
    assert by_name["fast-2"].time_to_first_token == fast.time_to_first_token
    assert slow.time_to_first_token >= 5 * fast.time_to_first_token
    assert slow.inter_token_latency > fast.inter_token_latency
    assert [adapter.name for adapter in by_name["lora"].adapters] == ["a", "b", "c", "d"]
    assert by_name["lora"].max_loras == 2
    assert by_name["flaky"].failure_injection_rate == 5
    assert all(by_name[name].failure_injection_rate == 0 for name in ("fast-1", "slow", "lora"))
    assert plan.backend == "mp"


def test_dry_run_prints_the_plan_and_starts_nothing() -> None:
    result = fleet_cli("--dry-run", str(EXAMPLE), "--base-port", "9300")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if "http://" in line}
    assert list(rows) == ["fast-1", "fast-2", "slow", "lora", "flaky"]
    assert "http://127.0.0.1:9300" in rows["fast-1"]
    assert "http://127.0.0.1:9304" in rows["flaky"]
    assert "a, b, c, d" in rows["lora"]
    assert "2 LoRA slots" in rows["lora"]
    assert "TTFT 800ms" in rows["slow"]
    assert "5% errors" in rows["flaky"]
    assert "llama-3.1-8b" in rows["fast-2"]


def test_dry_run_says_how_many_workers_share_the_instances(tmp_path: Path) -> None:
    names = "".join(f'[[instance]]\nname = "n{index}"\n' for index in range(5))
    path = write(tmp_path, f'[defaults]\ndata_parallel_backend = "workers"\nworkers = 2\n{names}')
    result = fleet_cli("--dry-run", str(path), "--base-port", "9300")
    assert result.returncode == 0, result.stderr
    assert "5 instances, 2 worker processes" in result.stdout
    assert load_fleet(path).workers == 2


# -- problems -----------------------------------------------------------------------


def test_every_problem_is_one_line_naming_the_instance_and_the_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
colour = "blue"
[defaults]
port = 1234
time_to_first_tokn = "1s"
[[instance]]
name = "a"
port = 9100
inter_token_latency = "soon"
[[instance]]
name = "b"
port = 9100
[[instance]]
model = "m"
[[instance]]
name = "c"
max_loras = 4
max_cpu_loras = 2
[[instance]]
name = "c"
mode = "loud"
""",
    )
    result = fleet_cli("--dry-run", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line.removeprefix(f"error: {path}: ") for line in result.stderr.splitlines()]
    assert lines == [
        "unknown top-level key 'colour' (expected base_port, defaults, instance)",
        "[defaults] port: give each instance its own port, or set base_port",
        "[defaults]: unknown key 'time_to_first_tokn' (see `llmsim config init` for the keys)",
        "instance #3: missing key 'name'",
        "instance 'c': name: given to more than one instance",
        "instance 'a': inter_token_latency: invalid duration 'soon': use a number with us, ms, "
        "s or m (e.g. 250ms)",
        "instance 'c': max_cpu_loras: must be at least max-loras",
        "instance 'c': mode: input should be 'echo' or 'random'",
        "instance 'b': port: 9100 is also used by instance 'a'",
    ]
    assert result.stdout == ""


def test_a_bad_default_is_reported_once_not_per_instance(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[defaults]
inter_token_latency = "soon"
[[instance]]
name = "a"
[[instance]]
name = "b"
""",
    )
    assert errors_of(path) == [
        "[defaults] inter_token_latency: invalid duration 'soon': use a number with us, ms, s "
        "or m (e.g. 250ms)"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "no instances: add one [[instance]] table per instance"),
        ('[instance]\nname = "a"\n', "no instances: add one [[instance]] table per instance"),
        ('base_port = "x"\n[[instance]]\nname = "a"\n', "base_port: must be an integer"),
        ('[[instance]]\nname = "has space"\n', "instance 'has space': name: use 1-63 letters"),
        (
            '[[instance]]\nname = "a"\ndata_parallel_backend = "inprocess"\n'
            '[[instance]]\nname = "b"\n',
            "data_parallel_backend: must be the same for every instance",
        ),
        (
            '[defaults]\ndata_parallel_backend = "workers"\n'
            '[[instance]]\nname = "a"\nworkers = 2\n[[instance]]\nname = "b"\n',
            "workers: must be the same for every instance",
        ),
        (
            "[defaults]\ndp_ports = true\n"
            + '[[instance]]\nname = "a"\ndata_parallel_size = 16\n'
            + '[[instance]]\nname = "b"\ndata_parallel_size = 16\n'
            + '[[instance]]\nname = "c"\ndata_parallel_size = 16\n'
            + '[[instance]]\nname = "d"\ndata_parallel_size = 16\n'
            + '[[instance]]\nname = "e"\n',
            "65 instances in all; at most 64 can run",
        ),
        (
            '[defaults]\ndata_parallel_backend = "workers"\n'
            + "".join(f'[[instance]]\nname = "n{index}"\n' for index in range(257)),
            "257 instances in all; at most 256 can run",
        ),
    ],
)
def test_fleet_wide_problems(tmp_path: Path, text: str, expected: str) -> None:
    lines = errors_of(write(tmp_path, text))
    assert len(lines) == 1
    assert lines[0].startswith(expected)


def test_unreadable_files_are_one_clear_line(tmp_path: Path) -> None:
    missing = fleet_cli("--dry-run", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"error: {tmp_path / 'nope.toml'}: file not found"
    broken = write(tmp_path, "[[instance]\n")
    result = fleet_cli(str(broken))
    assert result.returncode == 2
    assert "not valid TOML" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# -- ports --------------------------------------------------------------------------


def test_instances_without_a_port_fill_free_ranges_from_the_base(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
base_port = 9000
[[instance]]
name = "a"
data_parallel_size = 2
dp_ports = true
[[instance]]
name = "b"
port = 9001
[[instance]]
name = "c"
""",
    )
    plan = load_fleet(path)
    assert [(i.name, i.settings.port, i.rank) for i in plan.instances] == [
        ("a/dp0", 9002, 0),
        ("a/dp1", 9003, 1),
        ("b", 9001, 0),
        ("c", 9004, 0),
    ]
    moved = load_fleet(path, base_port=9500)
    assert [i.settings.port for i in moved.instances] == [9500, 9501, 9001, 9502]


def test_a_data_parallel_instance_is_one_port_in_front_of_its_engines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'base_port = 9000\n[[instance]]\nname = "a"\ndata_parallel_size = 3\n'
        '[[instance]]\nname = "b"\n',
    )
    plan = load_fleet(path)
    assert [(i.name, i.settings.port, i.ranks) for i in plan.instances] == [
        ("a", 9000, (0, 1, 2)),
        ("b", 9001, (0,)),
    ]


def test_a_data_parallel_range_clashes_like_a_port(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[instance]]
name = "a"
port = 9000
data_parallel_size = 3
dp_ports = true
[[instance]]
name = "b"
port = 9002
""",
    )
    assert errors_of(path) == ["instance 'b': port: 9002 is also used by instance 'a'"]


def test_base_port_zero_lets_the_system_choose(tmp_path: Path) -> None:
    path = write(tmp_path, 'base_port = 0\n[[instance]]\nname = "a"\n[[instance]]\nname = "b"\n')
    assert [i.settings.port for i in load_fleet(path).instances] == [0, 0]


# -- settings layers ----------------------------------------------------------------


def test_instance_keys_win_over_defaults_and_the_environment_fills_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMSIM_INTER_TOKEN_LATENCY", "7ms")
    monkeypatch.setenv("LLMSIM_MAX_MODEL_LEN", "1000")
    monkeypatch.setenv("LLMSIM_PORT", "1")  # ports are the fleet file's business
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "big.toml").write_text('model = "org/big"\nmax_loras = 3\n')
    path = write(
        tmp_path,
        """
base_port = 9100
[defaults]
max_model_len = 2048
[[instance]]
name = "a"
inter_token_latency = "3ms"
[[instance]]
name = "b"
config = "profiles/big.toml"
""",
    )
    a, b = (instance.settings for instance in load_fleet(path).instances)
    assert a.inter_token_latency == pytest.approx(0.003)
    assert b.inter_token_latency == pytest.approx(0.007)
    assert a.max_model_len == b.max_model_len == 2048
    assert (b.model, b.max_loras) == ("org/big", 3)
    assert (a.port, b.port) == (9100, 9101)


def test_data_parallel_size_is_bounded_and_its_dp_ports_must_fit() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"data_parallel_size": "17"})
    assert caught.value.lines == ["--data-parallel-size: input should be less than or equal to 16"]
    with pytest.raises(ConfigError) as caught:
        load_settings({"port": "65535", "data_parallel_size": "2", "dp_ports": True})
    assert caught.value.lines == [
        "--data-parallel-size: ports 65535..65536 go past 65535; lower the port"
    ]
    assert load_settings({"port": "0", "data_parallel_size": "16"}).settings.port == 0
    # vLLM's layout needs one port for every rank.
    assert load_settings({"port": "65535", "data_parallel_size": "2"}).settings.port == 65535
