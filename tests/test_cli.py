"""The numsim command line, run as a user runs it (subprocess)."""
import subprocess
import sys

from simulator.standard import standard_configs


def _numsim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simulator.cli", *args], capture_output=True,
                          text=True, timeout=900)


def test_help_and_bad_command():
    assert _numsim("--help").returncode == 0
    bad = _numsim("no-such-command")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_formats_csv_to_stdout():
    r = _numsim("formats", "--csv", "-")
    assert r.returncode == 0
    assert r.stdout.splitlines()[0].startswith("name")
    assert any(line.startswith("fp8_e4m3,") for line in r.stdout.splitlines())


def test_demo_prints_every_standard_configuration():
    r = _numsim("demo")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    for cfg in standard_configs():
        assert any(line.startswith(cfg.name + " ") for line in lines), cfg.name
    fp32 = next(line for line in lines if line.startswith("fp32 "))
    assert " inf " in fp32 + " "                # fp32 replay of the fp32 trace is exact
