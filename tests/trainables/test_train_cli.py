"""`python -m trainables.train` as a new user meets it: one-line errors, help for every option."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainables.train import main

REPO = Path(__file__).resolve().parents[2]


def _error(capsys, argv) -> str:
    rc = main(argv)
    cap = capsys.readouterr()
    assert rc == 2, (rc, cap.out, cap.err)
    lines = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), cap.err
    assert cap.out == ""  # nothing trained, no config record printed
    return lines[0]


def test_a_param_that_is_not_json_names_the_parameter_and_the_form(capsys):
    line = _error(capsys, ["--penalty", "symmetry", "--param", "angles=rot90", "--epochs", "1"])
    assert line.startswith("error: --param angles: 'rot90' is not JSON"), line
    assert """angles='["rot90"]'""" in line, line
    assert _error(capsys, ["--param", "m"]).startswith("error: --param m: expected KEY=JSON")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_one_line(capsys):
    line = _error(capsys, ["--device", "cuda", "--epochs", "1"])
    assert line.startswith("error: --device: 'cuda' requested but no GPU is available; valid choices: auto, cpu"), line


def test_a_bad_data_root_is_one_line(capsys, tmp_path):
    line = _error(capsys, ["--data-root", str(tmp_path / "nowhere"), "--epochs", "1"])
    assert line.startswith("error: --data-root: mnist: missing "), line
    assert "python -m foundations.data prepare" in line


def test_every_option_has_help_text():
    r = subprocess.run([sys.executable, "-m", "trainables.train", "--help"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    text = r.stdout.split("options:", 1)[1]
    blocks = re.split(r"\n(?=  -)", text)  # one block per option (help may wrap onto following lines)
    opts = {}
    for b in blocks:
        words = b.split()
        if not words:
            continue
        while len(words) > 1 and words[0].endswith(","):  # "-h, --help"
            words = words[1:]
        opt, words = words[0], words[1:]
        if words and (words[0].startswith("{") or not re.search("[a-z]", words[0])):  # the metavar
            words = words[1:]
        opts[opt] = " ".join(words)
    for opt in ("--dataset", "--model", "--penalty", "--lam", "--param", "--optimizer", "--lr", "--batch-size",
                "--epochs", "--seed", "--data-fraction", "--device", "--data-root"):
        assert opts.get(opt), f"{opt} has no help text:\n{r.stdout}"
