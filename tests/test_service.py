"""The systemd unit in deploy/: `systemd-analyze verify` finds nothing to
say about it, its command line runs as written (starting afresh, then
continuing its checkpoint on the next start), and every example of the
environment file parses with `rtrl-edge run`'s own parser.

systemd is not PID 1 here, so the unit is not started by systemd itself:
its ExecStart line is expanded the way systemd expands it (%S, ${VAR},
$VAR split on white space) and run."""
import os
import re
import shlex
import shutil
import subprocess

import pytest

import rtrl_edge
from rtrl_edge import cli, data
from support import launcher_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNIT = os.path.join(ROOT, "deploy", "rtrl-edge.service")
ENV_FILE = os.path.join(ROOT, "deploy", "rtrl-edge.env")
INSTALLED = "/opt/rtrl-edge/bin/rtrl-edge"
ENV = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(rtrl_edge.__file__)))


def needs(tool):
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is missing: .ci/run installs it (apt-get install systemd)")
        pytest.skip(f"{tool} is not installed (Debian: apt-get install systemd)")
    return path


def unit_lines():
    with open(UNIT, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def setting(name):
    values = [line.split("=", 1)[1] for line in unit_lines() if line.startswith(name + "=")]
    assert values, f"the unit has no {name}="
    return values


def launcher(tmp_path):
    """An executable standing where the unit's ExecStart expects the
    installed entry point: this interpreter running the package under test."""
    return os.path.join(launcher_dir(tmp_path), "rtrl-edge")


def test_systemd_analyze_verify_finds_nothing(tmp_path):
    tool = needs("systemd-analyze")
    text = open(UNIT, encoding="utf-8").read()
    assert INSTALLED in text and "EnvironmentFile=/etc/default/rtrl-edge" in text
    # the same unit, pointing at files that exist on this machine
    unit = tmp_path / "rtrl-edge.service"
    unit.write_text(text.replace(INSTALLED, launcher(tmp_path)).replace(
        "EnvironmentFile=/etc/default/rtrl-edge", f"EnvironmentFile={ENV_FILE}"))
    done = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), (
        done.stdout + done.stderr)
    # ... and it would complain about a fault: the check can fail
    broken = tmp_path / "broken.service"
    broken.write_text(unit.read_text().replace("Restart=on-failure", "Restart=sometimes"))
    done = subprocess.run([tool, "verify", str(broken)], capture_output=True, text=True,
                          timeout=60)
    assert "restart specifier" in done.stderr


def test_the_unit_asks_for_what_the_readme_promises():
    assert setting("Restart") == ["on-failure"]
    assert setting("StateDirectory") == ["rtrl-edge"]
    assert setting("KillSignal") == ["SIGTERM"]
    (exec_start,) = setting("ExecStart")
    assert "--resume" in exec_start and "--checkpoint ${RTRL_EDGE_CHECKPOINT}" in exec_start
    assert setting("Environment")[0] == "RTRL_EDGE_CHECKPOINT=%S/rtrl-edge/model.npz"
    # logs: nothing redirects the output away from the journal
    assert not any(line.startswith(("StandardOutput=", "StandardError="))
                   for line in unit_lines())


def expand(exec_start, env, state):
    """ExecStart as systemd expands it: %S, then ${VAR} as one word and
    $VAR split at white space."""
    line = exec_start.replace("%S", state)
    words = []
    for word in shlex.split(line):
        m = re.fullmatch(r"\$\{(\w+)\}", word)
        if m:
            words.append(env[m.group(1)])
        elif re.fullmatch(r"\$(\w+)", word):
            words.extend(env[word[1:]].split())
        else:
            words.append(word)
    return words


def test_execstart_starts_afresh_then_continues_its_checkpoint(tmp_path):
    state = tmp_path / "state"
    (state / "rtrl-edge").mkdir(parents=True)
    (exec_start,) = setting("ExecStart")
    checkpoint = setting("Environment")[0].split("=", 1)[1].replace("%S", str(state))
    env = {"RTRL_EDGE_ARGS": f"--replay {data.list_recordings()[0]} --learner rtrl "
                             f"--hidden 4 --max-steps 200",
           "RTRL_EDGE_CHECKPOINT": checkpoint}
    argv = expand(exec_start, env, str(state))
    assert argv[0] == INSTALLED
    argv[0] = launcher(tmp_path)
    # run from the state folder, as systemd would from /: never the source tree
    first = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=ENV,
                           cwd=state)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "starting afresh" in first.stdout and os.path.exists(checkpoint)
    env["RTRL_EDGE_ARGS"] = env["RTRL_EDGE_ARGS"].replace("200", "300")
    argv = [launcher(tmp_path)] + expand(exec_start, env, str(state))[1:]
    second = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=ENV,
                            cwd=state)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resumed from" in second.stdout and "continuing at sample 200" in second.stdout


def env_examples():
    """Every RTRL_EDGE_ARGS of the environment file, commented out or not."""
    with open(ENV_FILE, encoding="utf-8") as f:
        return [line.lstrip("#").split("=", 1)[1].strip() for line in f
                if line.lstrip("#").startswith("RTRL_EDGE_ARGS=")]


@pytest.mark.parametrize("args", env_examples())
def test_every_example_of_the_environment_file_parses(args):
    parsed = cli.build_parser().parse_args(
        ["run", *args.split(), "--checkpoint", "/tmp/x", "--resume", "--quiet"])
    assert parsed.func is cli.run.main and parsed.resume


def test_the_environment_file_has_examples():
    assert len(env_examples()) >= 3
