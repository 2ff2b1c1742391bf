"""pytest plugin for the arm64 run of tools/arm64-check (loaded with -p):
prints the x86-vs-arm64 agreement table in the terminal summary, just above
pytest's own closing line."""
import platform

AGREEMENT = []          # (label, agreement.summarise(...)) from test_x86_agreement.py

KINDS = (("exact", "initial parameters, x86 checkpoint loaded (bit-identical)"),
         ("gradient", "gradient(), rel. error <= 1e-4"),
         ("short", "online runs of 6-30 steps, rtol 1e-4 atol 1e-5"),
         ("long", "200-step online runs, rtol 1e-3 atol 1e-4"))


def pytest_report_header(config):
    from rtrl_edge import _kernels
    import numpy
    return [f"arm64-check: machine {platform.machine()}, rtrl_edge kernels "
            f"{_kernels.product_isa()} from {_kernels.__file__}, numpy {numpy.__version__}"]


def pytest_terminal_summary(terminalreporter):
    if not AGREEMENT:
        return
    tr = terminalreporter
    tr.section("float32 agreement with the x86-64 build")
    for label, summary in AGREEMENT:
        tr.write_line(label + ":")
        for kind, text in KINDS:
            if kind not in summary:
                continue
            norm_rel, used, ok, count = summary[kind]
            tr.write_line(f"  {text:<58} {count:3d} arrays  max rel. error {norm_rel:.2e}"
                          f"  max share of tolerance {used:.3f}  {'ok' if ok else 'FAIL'}")
