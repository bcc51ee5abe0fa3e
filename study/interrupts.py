"""Operator signals end a run as Ctrl-C does.

SIGTERM (what Slurm, Kubernetes, ``timeout`` and ``ray job stop`` send before SIGKILL) takes the
path of Ctrl-C: whatever the SIGINT handler is at that moment runs (the search stage's graceful
Tune stop while a Tuner runs, else ``KeyboardInterrupt``), so the study saves its state, prints
one line, records the run, and exits 143. A SIGTERM to the launcher's whole process group must
not kill the private Ray under that graceful stop: its processes are started with SIGTERM
blocked (:func:`sigterm_held`) and are stopped by ``ray.shutdown`` afterwards.

Ctrl-C while a Tuner runs: :func:`fit` (below) takes SIGINT from Tune and asks it to stop gracefully.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from contextlib import contextmanager

TERMINATED = threading.Event()  # a SIGTERM arrived while sigterm_as_ctrl_c was active
CTRL_C = threading.Event()  # a SIGINT or SIGTERM arrived while sigterm_as_ctrl_c was active
_ACTIVE = threading.Event()  # sigterm_as_ctrl_c is active: sigterm_held re-installs its handler


def _recording(previous):
    """A SIGINT handler that records the Ctrl-C in ``CTRL_C``, then does what ``previous`` did (Python's own:
    raise ``KeyboardInterrupt``). The record survives where that exception is swallowed (raise_if_swallowed)."""

    def on_sigint(signum, frame) -> None:
        CTRL_C.set()
        if callable(previous) and previous is not signal.default_int_handler:
            return previous(signum, frame)
        raise KeyboardInterrupt

    return on_sigint


def _quiet_unraisable(previous):
    """A ``sys.unraisablehook`` that leaves out the Ctrl-C an extension module's set-up swallowed (Cython prints it
    as "Exception ignored ... KeyboardInterrupt" with a traceback): it is recorded, and raise_if_swallowed raises it."""

    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and CTRL_C.is_set():
            return
        previous(unraisable)

    return hook


def raise_if_swallowed() -> None:
    """Raise the ``KeyboardInterrupt`` of a Ctrl-C that came while an extension module was being imported:
    Cython's module set-up (``import ray`` loads ``ray._raylet``) prints it as "Exception ignored" and goes on."""
    if CTRL_C.is_set():
        raise KeyboardInterrupt


def _on_sigterm(signum, frame) -> None:
    TERMINATED.set()
    CTRL_C.set()
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)  # what Ctrl-C does now (_on_sigint while Tune runs)
        return
    raise KeyboardInterrupt


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def sigterm_as_ctrl_c():
    """Within: SIGTERM does what Ctrl-C does, ``TERMINATED`` records that it came, and ``CTRL_C`` that
    either came (the SIGINT handler is wrapped by one that records, then does what it did)."""
    if not _main_thread():
        yield
        return
    TERMINATED.clear()
    CTRL_C.clear()
    old = signal.signal(signal.SIGTERM, _on_sigterm)
    old_int = signal.getsignal(signal.SIGINT)
    recording = old_int not in (signal.SIG_IGN, None)  # (SIGINT ignored: a background job's, left so)
    if recording:
        signal.signal(signal.SIGINT, _recording(old_int))
    old_hook = sys.unraisablehook
    sys.unraisablehook = _quiet_unraisable(old_hook)
    _ACTIVE.set()
    try:
        yield
    finally:
        _ACTIVE.clear()
        sys.unraisablehook = old_hook
        signal.signal(signal.SIGTERM, old if old is not None else signal.SIG_DFL)
        if recording:
            signal.signal(signal.SIGINT, old_int)


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


# ---------------------------------------------------------------- Ctrl-C during Tuner.fit()
# Tune catches SIGINT itself and returns a partial ResultGrid whose interrupted trials look
# TERMINATED. The search stage therefore takes SIGINT itself while a Tuner runs: it records
# the interrupt (``SIGINT_SEEN``) and asks Tune to stop through Tune's own stop signal (SIGUSR1),
# so Tune saves its state, and search.run_one never mistakes the partial grid for a finished search.
SIGINT_SEEN = threading.Event()


def _tune_not_listening(signum, frame) -> None:  # SIGUSR1 placeholder until Tune installs its handler
    pass


# False in a search task of the concurrent schedule: there the "Ctrl-C" is the driver's ray.cancel, which Ray
# may repeat; a repeat must not break Tune's graceful stop (a trial cut mid-save is restored as finished).
SECOND_SIGINT_STOPS = True


def _on_sigint(signum, frame) -> None:
    first = not SIGINT_SEEN.is_set()
    SIGINT_SEEN.set()
    listening = signal.getsignal(signal.SIGUSR1) not in (_tune_not_listening, signal.SIG_DFL, signal.SIG_IGN, None)
    if first and listening:
        os.kill(os.getpid(), signal.SIGUSR1)  # Tune stops its loop gracefully and saves its state
        return
    if listening and not SECOND_SIGINT_STOPS:
        return  # Tune is already stopping
    raise KeyboardInterrupt  # Tune not running yet, or a second Ctrl-C: stop at once


class _NoTuneResumeAdvice(logging.Filter):
    """Drop Tune's "Resume experiment with: Tuner.restore(...)" (launcher users rerun the command) and,
    after a Ctrl-C, its warning about trials that had not reported yet (expected then)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return "Tuner.restore" not in msg and not ("Failed to fetch metrics" in msg and SIGINT_SEEN.is_set())


def fit(tuner):
    """``tuner.fit()`` with Ctrl-C recorded in ``SIGINT_SEEN`` (see above); handlers restored afterwards."""
    SIGINT_SEEN.clear()
    if threading.current_thread() is not threading.main_thread():
        return tuner.fit()
    logs, quiet = (
        [logging.getLogger(n) for n in ("ray.tune.tune", "ray.tune.analysis.experiment_analysis")],
        _NoTuneResumeAdvice(),
    )
    old_int, old_usr1 = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGUSR1)
    old_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # SIGINT stays ours; Tune still listens to SIGUSR1
    signal.signal(signal.SIGUSR1, _tune_not_listening)
    signal.signal(signal.SIGINT, _on_sigint)
    for lg in logs:
        lg.addFilter(quiet)
    try:
        return tuner.fit()
    finally:
        for lg in logs:
            lg.removeFilter(quiet)
        signal.signal(signal.SIGINT, old_int if old_int is not None else signal.default_int_handler)
        signal.signal(signal.SIGUSR1, old_usr1 if old_usr1 is not None else signal.SIG_DFL)
        if old_env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = old_env
