"""benchmarks/run.py, the one command that regenerates benchmarks/README.md:
it knows every benchmark, and its summary block sits under the title and is
replaced, not repeated, on the next run."""
import glob
import importlib.util
import os

import pytest

BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "benchmarks")


@pytest.fixture
def run():
    spec = importlib.util.spec_from_file_location("bench_run_under_test",
                                                  os.path.join(BENCH_DIR, "run.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_benchmark_script_is_run(run):
    scripts = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(BENCH_DIR, "*.py"))}
    helpers = {"run", "extmarker", "apps_peers", "control_plants"}   # shared code
    assert set(run.NAMES) == scripts - helpers
    for name, quick, full, what in run.BENCHMARKS:
        assert what and "--no-write" not in quick + full


def test_every_readme_block_has_a_benchmark(run):
    with open(os.path.join(BENCH_DIR, "README.md"), encoding="utf-8") as f:
        doc = f.read()
    for name in run.NAMES:
        if name == "bench_learning":            # writes benchmarks/learning.md instead
            continue
        assert f"<!-- {name}:begin -->" in doc and f"<!-- {name}:end -->" in doc


def test_summary_goes_before_the_first_section_and_is_replaced(run, tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nIntro.\n\n## one\n<!-- x:begin -->\nnumbers\n"
                      "<!-- x:end -->\n", encoding="utf-8")
    monkeypatch.setattr(run, "README", str(readme))
    run.write_summary("first summary")
    text = readme.read_text(encoding="utf-8")
    assert text == ("# Benchmarks\n\nIntro.\n\n<!-- run:begin -->\nfirst summary\n"
                    "<!-- run:end -->\n\n## one\n<!-- x:begin -->\nnumbers\n<!-- x:end -->\n")
    run.write_summary("second summary")
    text = readme.read_text(encoding="utf-8")
    assert text.count("<!-- run:begin -->") == 1 and "first summary" not in text
    assert "second summary" in text and "Intro." in text and "numbers" in text


def test_rejects_an_unknown_benchmark(run, capsys):
    with pytest.raises(SystemExit):
        run.main(["--only", "bench_nothing"])
    assert "invalid choice" in capsys.readouterr().err
