"""Operator signals end a run as Ctrl-C does.

SIGTERM (what Slurm, Kubernetes, ``timeout`` and ``ray job stop`` send before SIGKILL) takes the
path of Ctrl-C: whatever the SIGINT handler is at that moment runs (the search stage's graceful
Tune stop while a Tuner runs, else ``KeyboardInterrupt``), so the study saves its state, prints
one line, records the run, and exits 143. A SIGTERM to the launcher's whole process group must
not kill the private Ray under that graceful stop: its processes are started with SIGTERM
blocked (:func:`sigterm_held`) and are stopped by ``ray.shutdown`` afterwards.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

TERMINATED = threading.Event()  # a SIGTERM arrived while sigterm_as_ctrl_c was active
_ACTIVE = threading.Event()  # sigterm_as_ctrl_c is active: sigterm_held re-installs its handler


def _on_sigterm(signum, frame) -> None:
    TERMINATED.set()
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)  # what Ctrl-C does now (search._on_sigint while Tune runs)
        return
    raise KeyboardInterrupt


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def sigterm_as_ctrl_c():
    """Within: SIGTERM does what Ctrl-C does, and ``TERMINATED`` records that it came."""
    if not _main_thread():
        yield
        return
    TERMINATED.clear()
    old = signal.signal(signal.SIGTERM, _on_sigterm)
    _ACTIVE.set()
    try:
        yield
    finally:
        _ACTIVE.clear()
        signal.signal(signal.SIGTERM, old if old is not None else signal.SIG_DFL)


@contextmanager
def sigterm_held():
    """Around ``ray.init``: the processes it starts inherit SIGTERM blocked (a group SIGTERM leaves them
    up for the graceful stop), and Ray's own driver SIGTERM handler is replaced by ours again."""
    if not _main_thread():
        yield
        return
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        if _ACTIVE.is_set():
            signal.signal(signal.SIGTERM, _on_sigterm)  # ray.init installed its own (sys.exit, or kill the node)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)  # a SIGTERM held meanwhile is delivered now


def what(exc: BaseException) -> str:
    """The interrupt in words for the launcher's line: ``SIGTERM ...`` or ``Ctrl-C ...``."""
    text = str(exc) or "Ctrl-C"
    if TERMINATED.is_set():
        return text.replace("Ctrl-C", "SIGTERM") if "Ctrl-C" in text else f"SIGTERM; {text}"
    return text


def exit_code() -> int:
    """143 (128 + SIGTERM) after a SIGTERM, else 130 (128 + SIGINT)."""
    return 128 + (signal.SIGTERM if TERMINATED.is_set() else signal.SIGINT)
