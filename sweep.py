"""Run many train.py runs on one machine: several at once, resumable, one result file each.

experiments.py builds the runs of the paper's three experiments and calls `run_all`; this
file knows nothing about what the runs mean. Each run is ordinary `train.py` training: a
worker process imports train.py once and calls `train.main(argv)` for one run after
another (one process start, one CUDA context and, per model shape, one torch.compile for
many runs), with the run's output in runs/NAME/train.log.

A sweep folder:
    runs/NAME/          train.py's out_dir (config.json, metrics.jsonl, report.md, ...)
    runs/NAME/run.json  what the run is: its config file and overrides (written before it starts)
    runs/NAME/result.json  its final metrics, written atomically when it has finished;
                        a run with one is never run again
A run that stopped part-way (Ctrl-C, SIGTERM, `time_limit`) has a checkpoint and no
result.json: the next call resumes it (`init_from='resume'`, train.py's exact resume). A run
killed before it wrote any checkpoint starts again from scratch.
"""
import gc
import json
import math
import os
import queue
import shlex
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field

# Keys that change the compiled graphs (shapes, µP constants, FP8 modules): a worker resets
# torch.compile's caches when the next run differs in one of them, so graphs of many shapes
# never pile up against dynamo's recompile limit.
COMPILE_KEYS = ("model_preset", "model_overrides", "mup", "fp8", "fp8_backend", "fp8_emulate",
                "dtype", "seq_len", "micro_batch", "compile", "activation_checkpointing", "device")


class SweepError(Exception):
    """Bad input found before any run started; the message names the problem and the fix."""


@dataclass
class Run:
    name: str  # folder under runs/
    config: str  # train.py config file
    overrides: dict  # train.py key -> value; out_dir is set here
    info: dict = field(default_factory=dict)  # what reports group by: width, lr, arm, seed ...
    after: tuple = ()  # names of runs that must have finished first (a decay after its stable phase)
    keep_checkpoint: bool = False  # sweep runs drop theirs once result.json is written
    cost_s: float = 0.0  # predicted seconds on the GPU: the larger runs start first

    def signature(self):
        """What makes two runs the same run (the folder is not part of it)."""
        return {"config": self.config, "overrides": self.overrides}

    def argv(self, root, resume=False):
        args = [self.config, *(f"--{k}={v!r}" for k, v in self.overrides.items()),
                f"--out_dir={os.path.join(root, 'runs', self.name)}"]
        return args + ["--init_from='resume'"] if resume else args

    def compile_key(self):
        return json.dumps({k: self.overrides.get(k) for k in COMPILE_KEYS}, sort_keys=True, default=str)


def shell_join(argv):
    """A command line to copy into a shell; double quotes where shlex would nest single ones."""
    out = []
    for a in argv:
        if shlex.quote(a) == a or any(c in a for c in '"$`\\!'):
            out.append(shlex.quote(a))
        else:
            out.append(f'"{a}"')
    return " ".join(out)


def _finite(obj):
    """NaN/inf -> None: result files stay strict JSON (a diverged run's loss is None)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(path, obj):
    """Atomically: a killed process leaves the old file or the new one, never half of one."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(_finite(obj), f, indent=1, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path):
    with open(path) as f:
        return json.load(f)


# ---------------------------------------------------------------------------------------
# What a finished run measured, from train.py's own metrics.jsonl and config.json.

def read_result(run_dir):
    """Final metrics of a train.py run dir, or None if it did not reach max_steps."""
    cfg = read_json(os.path.join(run_dir, "config.json"))
    records = []
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            records.append(json.loads(line))
    train_recs = [r for r in records if r["kind"] == "train"]
    val_recs = [r for r in records if r["kind"] == "val"]
    last_step = max((r["step"] for r in train_recs), default=cfg["start_step"])
    if last_step < cfg["max_steps"] or not val_recs or val_recs[-1]["step"] != cfg["max_steps"]:
        return None
    # The mixture's val loss: the per-source losses weighted as the training mix weights them.
    weights = {os.path.basename(os.path.normpath(p)): w for p, w in (cfg["val_data"] or cfg["data"]).items()}

    def mix(by_source):
        total = sum(weights.get(s, 0.0) for s in by_source)
        if total <= 0:
            return sum(by_source.values()) / len(by_source)
        return sum(weights.get(s, 0.0) * v for s, v in by_source.items()) / total
    final = val_recs[-1]["val_loss"]
    val = mix(final)
    speeds = [r["tokens_per_s"] for r in train_recs[1:]]  # the first interval holds the compile
    # A resumed run logs the steps after its checkpoint twice: the later record wins.
    val_curve = sorted({r["step"]: mix(r["val_loss"]) for r in val_recs}.items())
    train_curve = sorted({r["step"]: r["loss"] for r in train_recs}.items())
    return {
        "steps": last_step,
        "val": val,
        "val_by_source": final,
        "train_loss": train_recs[-1]["loss"],
        "diverged": not math.isfinite(val),
        "tokens_per_s": sorted(speeds)[len(speeds) // 2] if speeds else None,
        "val_curve": val_curve,
        "train_curve": train_curve,
        "update_rms": [{k: v for k, v in r.items() if k != "kind"} for r in records
                       if r["kind"] == "update_rms"],
    }


def _ended_non_finite(run_dir):
    """Did train.py stop this run for non-finite steps? (Its last record says so, whether
    train.main raised NonFiniteError or reported it as an error line.)"""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        last = None
        for line in f:
            last = json.loads(line)
    return last is not None and last["kind"] == "nonfinite"


# ---------------------------------------------------------------------------------------
# The worker: one process, many runs, each through train.main.

def _run_once(task):
    """One run in this worker process; returns its status. Output goes to the run's train.log."""
    import train  # imported once per worker (the first call), then reused
    run_dir = task["run_dir"]
    log = open(os.path.join(run_dir, "train.log"), "a")
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(log.fileno(), 1)  # file descriptors, so C-level and compiler output land there too
    os.dup2(log.fileno(), 2)
    t0 = time.time()
    status = "ok"
    try:
        print(f"[sweep] {shell_join(['python', 'train.py', *task['argv']])}", flush=True)
        if train.main(task["argv"]) != 0:
            status = "failed"
    except train.NonFiniteError as e:
        print(f"error: {e}")
        status = "failed"
    except Exception:
        traceback.print_exc()
        status = "failed"
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        log.close()
    seconds = time.time() - t0
    if status == "failed" and _ended_non_finite(run_dir):
        status = "diverged"  # the learning rate was too high: a result, not a failure
    if status == "failed":
        return {"status": "failed", "seconds": seconds}
    result = read_result(run_dir) if status == "ok" else None
    if status == "ok" and result is None:
        return {"status": "stopped", "seconds": seconds}  # a signal: checkpointed, resumes next call
    if result is None:  # diverged: train.py stopped it before its final val pass
        result = {"steps": None, "val": None, "val_by_source": {}, "train_loss": None,
                  "diverged": True, "tokens_per_s": None, "val_curve": [], "train_curve": [],
                  "update_rms": []}
    result["diverged"] = result["diverged"] or status == "diverged"
    import torch
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    write_json(os.path.join(run_dir, "result.json"),
               {"name": task["name"], **task["signature"], "info": task["info"], **result,
                "seconds": seconds, "device": gpu})
    if not task["keep_checkpoint"]:  # the result is safe on disk; the weights are not needed
        shutil.rmtree(os.path.join(run_dir, "ckpt"), ignore_errors=True)
    return {"status": "diverged" if result["diverged"] else "ok", "seconds": seconds}


def _worker(tasks, results, slot, threads):
    # SIGTERM between runs is ignored (train.py handles it during a run: stop, at once in a
    # single process, checkpoint the last completed step, return); the parent sends it again until the worker is idle.
    # SIGINT likewise: Ctrl-C reaches every process of the terminal, and the parent stops the
    # sweep itself.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch
    import train  # noqa: F401  once per worker, before the first run says it started
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(threads)  # the workers share the CPU cores
    last_key = None
    for task in iter(tasks.get, None):
        if task["compile_key"] != last_key and "torch._dynamo" in sys.modules:
            torch._dynamo.reset()  # another shape: start from empty graph caches
        last_key = task["compile_key"]
        results.put((slot, task["name"], {"status": "started"}))  # from now on SIGTERM stops it cleanly
        out = _run_once(task)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the next run's model starts on a clean slate
        results.put((slot, task["name"], out))


# ---------------------------------------------------------------------------------------
# The parent: validate everything, skip what is finished, hand the rest to the workers.

def _check(runs, root):
    """-> {name: 'finished' | 'resume' | 'fresh'}; raises SweepError listing every problem."""
    import train  # for its config validation: every run's config is checked before any work
    errors, state = [], {}
    names = [r.name for r in runs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SweepError(f"duplicate run names {dupes}")
    data_paths, bad_config = set(), {}  # one message per problem, not per run
    for config in sorted({r.config for r in runs}):
        if not os.path.exists(config):
            raise SweepError(f"{config} not found: run from the repository root")
    for run in runs:
        for dep in run.after:
            if dep not in names:
                errors.append(f"run {run.name} waits for {dep!r}, which is not in the sweep")
        try:
            cfg = train.load_config(run.config, run.argv(root)[1:], world_size=1)
        except (train.ConfigError, OSError) as e:
            bad_config.setdefault(" ".join(str(e).replace("\n  - ", "; ").split()), []).append(run.name)
            continue
        data_paths.update(list(cfg.data) + list(cfg.val_data or {}))
        run_dir = os.path.join(root, "runs", run.name)
        if not os.path.exists(run_dir):
            state[run.name] = "fresh"
            continue
        if not os.path.exists(os.path.join(run_dir, "run.json")):
            errors.append(f"{run_dir} exists but was not made by this runner (no run.json): "
                          f"choose another --out or move it away")
            continue
        if read_json(os.path.join(run_dir, "run.json"))["signature"] != run.signature():
            errors.append(f"{run_dir} was run with other settings than this sweep asks for now: "
                          f"use another --out, or delete that folder to redo it")
            continue
        if os.path.exists(os.path.join(run_dir, "result.json")):
            state[run.name] = "finished"
        elif os.path.exists(os.path.join(run_dir, "ckpt", "latest")):
            state[run.name] = "resume"
        else:
            state[run.name] = "fresh"  # killed before its first checkpoint: nothing to keep
    for message, names_bad in bad_config.items():
        errors.append(f"{message} (run{'s' if len(names_bad) > 1 else ''} {', '.join(names_bad[:3])}"
                      f"{f' and {len(names_bad) - 3} more' if len(names_bad) > 3 else ''})")
    import prepare  # names every missing folder with the command that builds it, as train.py does
    try:
        prepare.check_datasets_exist(sorted(data_paths))
    except prepare.MissingDataError as e:
        errors.append(f"data not prepared: {e}; or pass --data with prepared folders, e.g. "
                      f"--data \"{{'data/default': 1.0}}\" after `python prepare.py`")
    if errors:
        raise SweepError("; ".join(errors) if len(errors) == 1 else
                         f"{len(errors)} problems: " + " | ".join(errors))
    return state


def run_all(runs, root, workers=1, time_limit=None, log=print, start_method=None):
    """Run every unfinished run. Returns ({name: result dict} of the finished runs,
    {name: 'stopped' | 'failed' | 'blocked' | 'not started'} of the others, whether Ctrl-C or
    SIGTERM ended the call). start_method: how workers start (multiprocessing); default
    'spawn' (fresh interpreters) where CUDA is available, since a fork is only safe from a
    process that has not initialised CUDA, and 'forkserver' on a CPU (fast starts for tests)."""
    root = os.path.normpath(root)
    state = _check(runs, root)
    todo = [r for r in runs if state[r.name] != "finished"]
    log(f"[sweep] {root}: {len(runs)} runs, {len(runs) - len(todo)} finished, {len(todo)} to run"
        + (f" ({sum(state[r.name] == 'resume' for r in todo)} resume from a checkpoint)" if todo else ""))
    unfinished, interrupted = {}, False
    if todo:
        if start_method is None:
            import torch
            start_method = "spawn" if torch.cuda.is_available() else "forkserver"
        unfinished, interrupted = _dispatch(todo, state, root, min(workers, len(todo)), time_limit,
                                            log, start_method)
    return finished_results(runs, root), unfinished, interrupted


def finished_results(runs, root):
    """{name: result} of the runs that have a result.json under root/runs."""
    results = {}
    for run in runs:
        path = os.path.join(root, "runs", run.name, "result.json")
        if os.path.exists(path):
            results[run.name] = read_json(path)
    return results


def _dispatch(todo, state, root, n_workers, time_limit, log, start_method):
    import multiprocessing as mp
    ctx = mp.get_context(start_method)
    if start_method == "forkserver":
        # Workers fork from a server that has imported, once, what every run imports (train.py,
        # torch; dynamo, which torch.optim pulls in on first use; matplotlib for train.py's
        # report): 5-8 s saved per worker on a loaded CPU. It lives as long as this process.
        ctx.set_forkserver_preload(["sweep", "train", "torch._dynamo", "matplotlib.pyplot"])
    results = ctx.Queue()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cores // n_workers)

    def start_worker(i):
        tasks = ctx.Queue()
        p = ctx.Process(target=_worker, args=(tasks, results, i, threads), daemon=True)
        p.start()
        return {"process": p, "tasks": tasks, "run": None, "key": None, "started": False}
    slots = [start_worker(i) for i in range(n_workers)]
    pending = sorted(todo, key=lambda r: -r.cost_s)  # largest first: the tail stays short
    names = {r.name for r in todo}
    done, unfinished = set(), {}
    t_start = time.time()
    deadline = t_start + time_limit if time_limit else None
    stopping, interrupted, last_signal = False, False, 0.0

    def ready(run):
        return all(d in done or d not in names for d in run.after)

    def hand_out(slot):
        """Give an idle worker the next run: one of its compiled shape if any waits."""
        candidates = [r for r in pending if ready(r)]
        if not candidates:
            return
        run = next((r for r in candidates if r.compile_key() == slot["key"]), candidates[0])
        pending.remove(run)
        run_dir = os.path.join(root, "runs", run.name)
        if state[run.name] == "fresh" and os.path.exists(run_dir):
            shutil.rmtree(run_dir)  # a killed run's partial logs; it never checkpointed
        os.makedirs(run_dir, exist_ok=True)
        write_json(os.path.join(run_dir, "run.json"),
                   {"name": run.name, "signature": run.signature(), "info": run.info})
        slot["tasks"].put({"name": run.name, "run_dir": run_dir, "signature": run.signature(),
                           "argv": run.argv(root, resume=state[run.name] == "resume"),
                           "info": run.info, "keep_checkpoint": run.keep_checkpoint,
                           "compile_key": run.compile_key()})
        slot["run"], slot["key"] = run, run.compile_key()

    def finished(slot_i, name, out):
        if out["status"] == "started":
            slots[slot_i]["started"] = True
            return
        slots[slot_i]["run"], slots[slot_i]["started"] = None, False
        if out["status"] in ("ok", "diverged"):
            done.add(name)
            val = read_json(os.path.join(root, "runs", name, "result.json"))["val"]
            log(f"[sweep] {len(done)}/{len(todo)} {name}: "
                + (f"val {val:.4f}" if val is not None else "diverged")
                + f" ({out['seconds']:.0f} s; {time.time() - t_start:.0f} s so far)")
        else:
            unfinished[name] = out["status"]
            log(f"[sweep] {name}: {out['status']} after {out['seconds']:.0f} s"
                + (" (checkpointed: the next call resumes it)" if out["status"] == "stopped"
                   else f"; see {os.path.join(root, 'runs', name, 'train.log')}"))

    # SIGTERM to this process (a job's time limit) stops the sweep as Ctrl-C does.
    def on_term(signum, frame):
        raise KeyboardInterrupt
    previous_term = signal.signal(signal.SIGTERM, on_term)
    try:
        while True:
            try:
                if not stopping:
                    for slot in slots:
                        if slot["run"] is None:
                            hand_out(slot)
                busy = [s for s in slots if s["run"] is not None]
                if not busy:
                    break
                if deadline and time.time() > deadline and not stopping:
                    log(f"[sweep] time limit ({time_limit:g} s) reached: the running runs "
                        f"checkpoint and stop; the next call resumes them")
                    stopping = True
                if stopping and time.time() - last_signal > 0.5:
                    # Only workers inside a run (one still starting would die of it); again every
                    # 0.5 s, since train.py installs its handler a moment after the run starts.
                    for s in busy:
                        if s["started"]:
                            os.kill(s["process"].pid, signal.SIGTERM)
                    last_signal = time.time()
                try:
                    finished(*results.get(timeout=0.5))
                except queue.Empty:
                    for i, s in enumerate(slots):
                        if s["run"] is not None and not s["process"].is_alive():
                            log(f"[sweep] {s['run'].name}: its worker died (exit code "
                                f"{s['process'].exitcode}, e.g. out of memory); see its train.log")
                            unfinished[s["run"].name] = "failed"
                            slots[i] = start_worker(i)
            except KeyboardInterrupt:
                if stopping and interrupted:
                    log("[sweep] killing the workers")
                    for s in slots:  # the second Ctrl-C: no checkpoint, no waiting
                        s["process"].kill()
                    break
                log("[sweep] interrupted: the running runs checkpoint and stop "
                    "(Ctrl-C again to kill them)")
                stopping = interrupted = True
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        for s in slots:
            if s["process"].is_alive():
                s["tasks"].put(None)
        for s in slots:
            s["process"].join(timeout=30)
            if s["process"].is_alive():
                s["process"].kill()
    for run in pending:  # never started: the time limit, or a run it waits for did not finish
        unfinished[run.name] = "not started" if ready(run) else "blocked"
    return unfinished, interrupted
