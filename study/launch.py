"""Run the study: ``python -m study.launch [--config configs/quick.yaml] [--set KEY=VALUE ...]``.

Validates the configuration (and the data) before Ray starts, starts a quiet single-node Ray
unless ``--address`` names a running cluster, runs the search stage (study/search.py), prints
the selected models, then (``--stage all``, the default) the evaluation stage
(evaluation/stage.py) and the report (study/report.py), and shuts Ray down. Rerunning the
same command, or ``--resume``, continues an interrupted study where it stopped.

On a cluster (``--cluster cluster.yaml``, or ``--address http://head:8265``) the same study is
submitted as a Ray Job whose driver runs this module on the head (study/cluster.py).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path


from foundations import model_paths, storage
from study import interrupts, mounts
from study.cluster import CONFIG_ENV, EXCLUDES
from study.resources import check_resources
from study.config import (
    PRESETS, REPO_ROOT, ConfigError, StudyConfig, apply_overrides, config_from_raw, load_raw, read_saved,
)

# Stages after the search, in order: (name, "module:function"). Each is called as
# ``fn(cfg, selected)`` with the study config and the selected-models DataFrame. A later stage
# plugs in with one line here; a module that does not exist yet is reported and skipped.
LATER_STAGES: list[tuple[str, str]] = [
    ("evaluate", "evaluation.stage:run_for_study"),
    ("report", "study.report:run"),
]

SMOKE = ["trials=2", "epochs=1", "data_fraction=0.01", "val_limit=500", "explain_n=20", "per_dataset={}"]

EPILOG = """\
examples:
  python -m study.launch                                   # the quick preset (configs/quick.yaml)
  python -m study.launch --config paper --set trials=10    # a preset by name, one override
  python -m study.launch --set datasets=[mnist] --set space.gradient.lam=[0.001,1]
  python -m study.launch --resume --output outputs/quick   # continue with the saved config
  python -m study.launch --address ray://head:10001 --config full --output /shared/full
  python -m study.launch --cluster cluster.yaml --config full --storage s3://bucket/studies [--down]
  python -m study.launch --address http://127.0.0.1:8265 --storage s3://bucket/studies   # a cluster's job server

Values of --set are parsed as YAML; dotted keys reach nested sections (resources.cpu=2).
Results: <output>/{trials,epochs,selected}/ (Parquet), <output>/models/ (weights); see docs/search.md.
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m study.launch",
        description="Search penalty hyper-parameters with Ray Tune + Optuna, select one model per (dataset, penalty).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config", default=None, help=f"YAML config file or preset name ({', '.join(PRESETS)}); default: quick"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (repeatable), e.g. --set trials=20 --set datasets=[mnist]",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--local", action="store_true", help="start a private single-node Ray (the default without --address/--cluster)"
    )
    where.add_argument(
        "--address",
        default=None,
        help="a running Ray cluster: auto, host:6379 or ray://host:10001 (this process is the driver), "
        "or http://host:8265 (submit the study to its job server); a multi-node cluster needs "
        "--storage or an --output every node mounts",
    )
    where.add_argument(
        "--cluster",
        default=None,
        metavar="CLUSTER_YAML",
        help="a Ray cluster-launcher file (cluster.yaml): bring the cluster up (or reuse it), submit "
        "the study as a Ray Job, stream its logs; see docs/cluster.md",
    )
    p.add_argument(
        "--storage",
        default=None,
        metavar="URI",
        help="where studies are written, one location every node reaches: s3://bucket/prefix, "
        "gs://bucket/prefix or a shared path; the study goes to URI/<name>",
    )
    p.add_argument(
        "--storage-endpoint",
        default=None,
        metavar="URL",
        help="S3-compatible server for s3:// storage (MinIO, Ceph...), e.g. http://10.0.0.5:9000 "
        "(default: $AWS_ENDPOINT_URL or AWS itself)",
    )
    p.add_argument("--job", action="store_true",
                   help="(used by --cluster) inside the Ray Job on the head: read the study config from "
                        "$SALIENCY_STUDY_CONFIG and join this cluster (address auto)")
    p.add_argument("--down", action="store_true", help="with --cluster: tear the cluster down afterwards")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    p.add_argument("--num-gpus", type=int, default=None, help="GPUs of the local Ray (default: all visible)")
    p.add_argument("--output", default=None, help="study folder (default: outputs/<name>)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the study in the output folder with its saved config (--set may change "
        "resources and concurrency); rerunning the same command also continues",
    )
    p.add_argument(
        "--stage",
        choices=("search", "evaluate", "all"),
        default="all",
        help="search: the search stage only; evaluate: the evaluation stage and report on a finished "
        "search (e.g. with other evaluation settings); all: search, evaluation, report (default)",
    )
    p.add_argument(
        "--smoke-test",
        action="store_true",
        help="a small run (~1.5 min on 2 CPUs): first dataset, `none` + one penalty, 2 trials of 1 epoch "
        "on 1%% of the data (output <name>-smoke; --resume finds it); an explicit --set wins",
    )
    from study import simulate

    simulate.add_arguments(p)  # --simulate [PROFILE] --cpus N [--gpus N] [--nodes K] [--time-scale F] [--compare]
    p.add_argument("-v", "--verbose", action="count", default=1, help="-v: Tune's detailed progress output")
    p.add_argument("-q", "--quiet", action="store_true", help="only the summary lines and the final table")
    return p.parse_args(argv)


def resolve_config(args: argparse.Namespace) -> StudyConfig:
    """The study config from the CLI (raises ConfigError on any bad value; starts nothing)."""
    overrides = list(args.overrides)
    if getattr(args, "job", False):  # inside the Ray Job: the launcher on the user's machine validated it
        from study.cluster import job_config

        return config_from_raw(apply_overrides(job_config(), overrides))

    def fresh() -> dict:
        raw = load_raw(args.config or "quick")
        if args.smoke_test:  # the shrink first: an explicit --set wins over it
            raw = apply_overrides(raw, SMOKE)
            first = (raw.get("datasets") or ["mnist"])[:1]
            pens = [p for p in (raw.get("penalties") or ["none", "gradient"]) if p != "none"][:1] or ["gradient"]
            raw["datasets"], raw["penalties"] = first, ["none", *pens]
            raw["name"] = f"{raw.get('name', 'quick')}-smoke"
        return apply_overrides(raw, overrides)

    if not args.resume:
        raw = fresh()
    else:
        if args.output:
            out = storage.normalize(args.output)
        else:  # where the same command without --resume writes (the smoke test's own folder too)
            out = config_from_raw(fresh()).location
            if args.storage:
                out = storage.join(storage.normalize(args.storage), storage.name(out))
        if not storage.is_file(storage.join(out, "config.yaml")):
            raise ConfigError(
                f"--resume: no study to resume in {out} (missing config.yaml); run without --resume first"
            )
        raw = apply_overrides(read_saved(out), overrides)
    if args.output:
        raw["output"] = storage.normalize(args.output)
    elif args.storage and not args.resume:
        raw["output"] = storage.join(storage.normalize(args.storage), raw.get("name") or "quick")
    cfg = config_from_raw(raw)
    if not cfg.output:  # pin the folder now so that a later change of directory cannot move it
        cfg.output = cfg.location
    return cfg


NO_BASELINE = (
    "penalties: no `none` baseline: selection has no baseline accuracy (baseline_val_acc is NaN) and "
    "keeps every model as within tolerance; add none to penalties for the rule of docs/spec.md §6"
)


def config_warnings(cfg: StudyConfig) -> list[str]:
    """Settings that are valid but probably not what the user wants (printed, the run goes on)."""
    return [NO_BASELINE] if "none" not in cfg.penalties else []


def check_data(cfg: StudyConfig) -> None:
    from foundations import data as data_mod

    for ds in cfg.datasets:
        try:
            data_mod.verify(cfg.data_path, ds)
        except data_mod.DataError as exc:
            raise ConfigError(f"data: {data_hint(cfg, ds, exc)}") from None


def data_hint(cfg: StudyConfig, dataset: str, exc: Exception) -> str:
    """A data error with the way out: a missing file most often means the data moved (``--set data_root``)."""
    text = str(exc)
    if ": missing " not in text:
        return text  # a corrupt file: its own advice (delete, prepare again)
    root = cfg.data_path
    return (f"{text.split('; run ')[0]}; valid choices: --set data_root=DIR where the prepared data now lies "
            f"(or SALIENCY_DATA_ROOT=DIR for a study without data_root), or prepare it: "
            f"python -m foundations.data prepare --root {root} --dataset {dataset}")


def check_output_writable(cfg: StudyConfig) -> None:
    """A local output folder must be (or become) a writable folder; raises ConfigError otherwise."""
    loc = cfg.location
    if storage.is_remote(loc):
        return  # storage.check_access tries the bucket (search.check_output)
    path = Path(loc)
    bad = next((q for q in (path, *path.parents) if q.exists() and not q.is_dir()), None)
    if bad is not None:
        what = "is a file" if bad == path else f"cannot be made: {bad} is a file"
        raise ConfigError(f"output: {loc} {what}, not a folder; valid choices: a new or existing folder (--output DIR)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"output: cannot write to {loc} ({exc.strerror or type(exc).__name__}); "
            f"valid choices: a folder you can write to (--output DIR)"
        ) from None


@contextmanager
def ray_session(address: str | None, num_cpus: int | None = None, num_gpus: int | None = None):
    """Connect to ``address``, or start a quiet private single-node Ray; shut it down afterwards."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    if address:
        if not os.environ.get(CONFIG_ENV):  # inside a Ray Job the job's runtime_env already ships the project
            kwargs["runtime_env"] = {
                "working_dir": str(REPO_ROOT),
                "excludes": list(EXCLUDES),
                "env_vars": storage.worker_env(),
            }
        with interrupts.sigterm_held():
            ray.init(address=address, **kwargs)
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local cluster, no token needed
        with interrupts.sigterm_held():  # the private Ray outlives a group SIGTERM until the graceful stop is done
            ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, **kwargs)
    try:
        yield ray
    finally:
        ray.shutdown()


def run_later_stages(cfg: StudyConfig, selected, log=print, quiet: bool = False, skip: tuple[str, ...] = ()) -> None:
    for name, target in LATER_STAGES:
        if name in skip:
            continue
        module, _, fn = target.partition(":")
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            log(f"[{name}] skipped: {module} does not exist yet")
            continue
        t0 = time.perf_counter()
        stage = getattr(mod, fn)
        import inspect

        stage(cfg, selected, **({"quiet": True} if quiet and "quiet" in inspect.signature(stage).parameters else {}))
        if name == "evaluate":  # its results are complete: config.yaml may now record its settings
            from study import saved_config

            saved_config.evaluation_done(cfg)
        log(f"[{name}] done in {time.perf_counter() - t0:.1f} s")


def _job_server(address: str | None) -> bool:
    return bool(address) and address.startswith(("http://", "https://"))


ADDRESS_FORMS = "auto, host:6379 (a GCS), ray://host:10001 (Ray Client) or http://host:8265 (a job server)"


def check_address(address: str | None, timeout: float = 5.0) -> None:
    """Refuse at once an ``--address`` where nothing answers (Ray itself would retry for minutes)."""
    if not address or address in ("auto", "local"):
        return
    import socket
    import urllib.error
    import urllib.parse
    import urllib.request

    if _job_server(address):
        try:
            urllib.request.urlopen(address.rstrip("/") + "/api/version", timeout=timeout).close()
        except urllib.error.HTTPError:
            return  # a web server answers; the job client says whether it is Ray's
        except (urllib.error.URLError, OSError, ValueError) as exc:
            why = getattr(exc, "reason", exc)
            why = getattr(why, "strerror", None) or why
            raise ConfigError(
                f"--address: no Ray job server answers at {address} ({why}); valid choices: {ADDRESS_FORMS}"
            ) from None
        return
    hostport = address.split("://", 1)[1] if address.startswith("ray://") else address
    parsed = urllib.parse.urlsplit("//" + hostport)
    try:
        host, port = parsed.hostname, parsed.port or (10001 if address.startswith("ray://") else 6379)
    except ValueError:
        host, port = None, None
    if not host or "://" in hostport or "/" in hostport:
        raise ConfigError(f"--address: cannot read {address!r}; valid choices: {ADDRESS_FORMS}")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(
            f"--address: nothing answers at {host}:{port} ({exc.strerror or type(exc).__name__}"
            f"{'' if exc.strerror else ' after ' + format(timeout, 'g') + ' s'}); "
            f"valid choices: {ADDRESS_FORMS}"
        ) from None


def launch_on_cluster(args: argparse.Namespace) -> int:
    """``--cluster`` / ``--address http://…``: validate here, run the study as a Ray Job (study/cluster.py)."""
    from study import cluster

    try:
        cfg = resolve_config(args)
        return cluster.launch(args, cfg)
    except (ConfigError, cluster.ClusterError, storage.StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def check_cluster_storage(cfg: StudyConfig, address: str | None) -> None:
    """On a running cluster, refuse a node-local output when the cluster spans several hosts."""
    if not address:
        return
    from study.resources import EXPECT_WORKERS_ENV

    mounts.check_shared(
        cfg.location, mounts.cluster_hosts(), expect_more_hosts=bool(os.environ.get(EXPECT_WORKERS_ENV))
    )


def main(argv: list[str] | None = None) -> int:
    """The launch (:func:`_main`); the study folder's lock, taken there, is released however it ends."""
    from study import lock

    try:
        return _main(argv)
    finally:
        lock.release_all()


def _main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.job:
        args.address = "auto"
    try:
        if args.down and not args.cluster:
            raise ConfigError("--down needs --cluster (it tears down the cluster that file describes)")
        if args.storage_endpoint:
            os.environ["AWS_ENDPOINT_URL_S3"] = storage.check_endpoint(args.storage_endpoint)
        if args.storage:
            storage.normalize(args.storage)
        check_address(args.address)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.cluster or _job_server(args.address):
        return launch_on_cluster(args)
    try:
        cfg = resolve_config(args)
        from study import simulate

        cfg = simulate.configure(args, cfg)  # --simulate: the sleeping bodies and the cluster's shape
        for w in config_warnings(cfg):
            print(f"warning: {w}", file=sys.stderr, flush=True)
        check_data(cfg)
        check_output_writable(cfg)
        from study import lock, search, selection

        lock.acquire(cfg.location)  # one run per study folder, until this launch ends (study/lock.py)

        search.check_output(cfg)
        from study import journal

        journal.repair_journals(cfg.location)  # before Ray: damage that is not a torn tail is refused here
        from study.loading import check_search_tables

        check_search_tables(cfg.location)  # an unreadable search table: one line naming it, before Ray
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    verbose = 0 if args.quiet else min(args.verbose, 2)
    if cfg.simulate.enabled:
        return simulate.main(args, cfg)
    t0, started = time.perf_counter(), time.time()
    commit = None  # the code that starts the run (the tree may change while it runs); set inside the try below
    signals = contextlib.ExitStack()  # from the first line on, Ctrl-C and SIGTERM end the run as below
    signals.enter_context(interrupts.sigterm_as_ctrl_c())
    try:
        print(
            f"[study] {cfg.name}: {len(cfg.datasets)} dataset(s) x {len(cfg.penalties)} penalties x "
            f"{cfg.search.trials} trials -> {cfg.location}",
            flush=True,
        )
        if not args.address:  # a private Ray: it goes down with this process, and an earlier run's leftovers go first
            from study import reaper

            reaper.guard_private_ray(cfg.location, log=lambda s: print(s, flush=True))
        from foundations.schemas import git_commit

        commit = git_commit()
        with ray_session(args.address, args.num_cpus, args.num_gpus):
            interrupts.raise_if_swallowed()  # a Ctrl-C while Ray's extension modules loaded
            print(f"[study] Ray up in {time.perf_counter() - t0:.1f} s", flush=True)
            from study import diskfull

            diskfull.quiet_ray_logs()  # a full disk ends the run in one line, not in Tune's retried tracebacks
            try:
                check_cluster_storage(cfg, args.address)
                if args.stage != "evaluate":
                    check_resources(cfg, args.address, log=lambda s: print(s, file=sys.stderr, flush=True))
            except (storage.StorageError, ConfigError) as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            which = "sequential"  # --stage evaluate: no search to schedule
            if args.stage != "evaluate":
                import ray

                from study.schedule import chosen

                which, why = chosen(cfg, ray.cluster_resources().get("CPU", 1))
                print(f"[study] schedule: {which} ({why})", flush=True)
            if args.stage == "evaluate":
                from foundations.schemas import read_table

                if not storage.exists(storage.join(cfg.location, "selected")):
                    print(
                        f"error: --stage evaluate: no selected models in {cfg.location}; run the search first",
                        file=sys.stderr,
                    )
                    return 2
                selected = read_table(cfg.location, "selected")
                try:  # every model in this folder, before any task starts (never another folder's)
                    [model_paths.resolve_row(cfg.location, r) for r in selected.to_dict("records")]
                except model_paths.ModelPathError as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    return 2
            elif which == "concurrent":  # every search and evaluation task at once (study/schedule.py)
                from study.schedule import run_study

                selected = run_study(
                    cfg, evaluate=args.stage == "all", verbose=verbose, log=lambda s: print(s, flush=True)
                )
            else:
                selected = search.run_search(cfg, verbose=verbose, log=lambda s: print(s, flush=True))
            print("\nselected models:\n" + selection.format_selected(selected), flush=True)
            if "none" not in cfg.penalties and len(selected):
                print(
                    "(no baseline: `none` was not searched, so within_tolerance is not checked against any accuracy)",
                    flush=True,
                )
            if args.stage in ("evaluate", "all"):
                interrupts.raise_if_swallowed()
                done = ("evaluate",) if args.stage == "all" and which == "concurrent" else ()
                run_later_stages(cfg, selected, log=lambda s: print(s, flush=True), quiet=args.quiet, skip=done)
    except (KeyboardInterrupt, search.SearchInterrupted) as exc:
        record_run(cfg, argv, started, time.perf_counter() - t0, "interrupted", commit)
        print(f"\n[study] interrupted ({interrupts.what(exc)}); rerun the same command to continue", file=sys.stderr)
        return interrupts.exit_code()
    except Exception as exc:
        from study import diskfull

        if not diskfull.disk_full(exc, cfg.location):
            raise
        removed = diskfull.discard_partial(cfg.location)  # what the cut writes left half-written, named below
        print(diskfull.message(cfg.location, removed), file=sys.stderr)  # (runs.jsonl cannot be written either)
        return 1
    finally:
        signals.close()
    record_run(cfg, argv, started, time.perf_counter() - t0, "finished", commit)
    print(f"[study] finished in {time.perf_counter() - t0:.1f} s; results in {cfg.location}", flush=True)
    return 0


RUNS_FILE = "runs.jsonl"


def machine() -> str:
    """This machine in words: CPUs, memory, GPUs (recorded with every run)."""
    import platform

    mem = ""
    try:
        mem = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        pass
    gpus = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpus = f", {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    except Exception:  # noqa: BLE001 - a description only
        pass
    return f"{platform.machine()}, {os.cpu_count()} CPUs{mem}{gpus}, {platform.system()} {platform.release()}"


def record_run(cfg: StudyConfig, argv: list[str] | None, started: float, seconds: float, status: str,
               commit: str | None = None) -> None:
    """Append one line to ``<output>/runs.jsonl``: the command, its wall time, the machine and commit.

    The report's results page reads it (what ran, where, how long); a failure to write it is reported,
    never fatal."""
    import json
    import platform

    from foundations.schemas import git_commit

    line = {
        "command": "python -m study.launch " + " ".join(sys.argv[1:] if argv is None else argv),
        "status": status,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_seconds": round(seconds, 1),
        "host": platform.node(),
        "machine": machine(),
        "git_commit": git_commit() if commit is None else commit,  # the caller's: the commit at the start
        "python": platform.python_version(),
    }
    loc = storage.join(cfg.location, RUNS_FILE)
    try:
        old = storage.read_text(loc) if storage.exists(loc) else ""
        storage.write_text(loc, old + json.dumps(line) + "\n")
    except Exception as exc:  # noqa: BLE001
        print(f"[study] could not record the run in {loc}: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
