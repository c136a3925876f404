"""The documentation a clone carries: every "RECIPE §n" names a section of docs/RECIPE.md, the
README points only inside the repository, and what the README's commands write is git-ignored."""
import re
import shlex
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "docs" / "RECIPE.md"
README = ROOT / "README.md"
NOT_SOURCE = {".git", ".venv", "data", "out", "hf", ".whl", ".te", "wandb", "__pycache__"}


def project_text_files():
    """Every .py, .md and .sh file of the project (tests, configs, docs and gpu_tests included)."""
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT)
        if path.suffix in (".py", ".md", ".sh") and not NOT_SOURCE & set(rel.parts[:-1]):
            yield path


def recipe_sections():
    return {int(n) for n in re.findall(r"^## (\d+)\. ", RECIPE.read_text(), re.M)}


def test_recipe_has_the_seven_sections_the_code_cites():
    assert recipe_sections() == set(range(1, 8))


def test_every_section_sign_in_the_project_names_a_section_of_docs_recipe():
    # In this project "§n" always means a section of docs/RECIPE.md, whether written
    # "RECIPE §2", "RECIPE §1/§3", "RECIPE §2, §3, §5" or, in a config, "(§4)".
    sections = recipe_sections()
    cited, bad = 0, []
    for path in project_text_files():
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for n in re.findall(r"§\s?(\d+)", line):
                cited += 1
                if int(n) not in sections:
                    bad.append(f"{path.relative_to(ROOT)}:{lineno}: §{n}")
    assert cited > 50, f"found only {cited} citations: is the scan looking in the right files?"
    assert not bad, "citations of sections docs/RECIPE.md does not have:\n" + "\n".join(bad)


def test_readme_points_only_inside_the_repository():
    text = README.read_text()
    assert "../" not in text and "/work/" not in text and "shared/RECIPE" not in text
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [t for t in links if not re.match(r"[a-z]+://", t) and not t.startswith("#")]
    assert "docs/RECIPE.md" in local
    missing = [t for t in local if not (ROOT / t.split("#")[0]).exists()]
    assert not missing, f"README links to files the repository does not have: {missing}"


# --------------------------------------------------------------------------- outputs are ignored

def readme_commands():
    """argv lists of the shell commands in the README's bash blocks and inline `python ...`."""
    text = README.read_text()
    chunks = re.findall(r"```bash\n(.*?)```", text, re.S)
    chunks += re.findall(r"`((?:python|torchrun) [^`]*)`", text)
    commands = []
    for chunk in chunks:
        for line in chunk.splitlines():
            line = re.sub(r"\s#.*$", "", line)  # trailing comment
            for part in line.split("&&"):
                if part.strip():
                    commands.append(shlex.split(part))
    return commands


def _option(args, name):
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def written_paths(argv):
    """What one README command writes inside the repository, by the scripts' own defaults."""
    if argv[0] in (".", "source", "pip"):
        return []
    if argv[0] == "bash":  # the GPU scripts' output folders (their defaults, gpu_tests/README.md)
        script, args = argv[1], argv[2:]
        return {"gpu_tests/proxy_fp8_vs_bf16.sh": [(args[1] if len(args) > 1 else "out/gpu_fp8_check")
                                                   + "/bf16/report.md"],
                "gpu_tests/train_smoke.sh": [(args[0] if args else "out/gpu_smoke") + "/full/report.md"],
                "gpu_tests/te_carry.sh": [".te/small/core.sha256"],
                "gpu_tests/corpus_carry.sh": [".whl/p1/x.whl"]}[script]
    if argv[0] == "torchrun":
        argv = ["python"] + [a for a in argv[1:] if not a.startswith("--")]
    assert argv[0] in ("python", "python3"), f"README runs {argv}: teach written_paths about it"
    if argv[1] == "-m":
        return {"venv": [argv[3] + "/bin/python"], "pip": [],
                "pytest": [".pytest_cache/v/cache/lastfailed", "tests/__pycache__/x.pyc"]}[argv[2]]
    script, args = argv[1], argv[2:]
    if script == "prepare.py":
        if "--corpus" in args:
            return [(_option(args, "--out") or "data/proxy") + "/code/meta.json"]
        if _option(args, "--recipe") and not _option(args, "--out"):
            return ["data/web/meta.json"]
        if _option(args, "--out"):
            return [_option(args, "--out") + "/meta.json"]
        return ["data/default/meta.json"] if not _option(args, "--input") else \
            [f"data/{Path(_option(args, '--input')).stem}/meta.json"]
    if script == "train.py":
        config = (ROOT / args[0]).read_text()
        out_dir = _option(args, "--out_dir") or re.search(r'^out_dir = "([^"]+)"', config, re.M).group(1)
        return [out_dir + "/report.md"]
    # bench_prepare.py writes to a temp folder; mfu_both_ways.py only prints; sigint_latency.py
    # deletes what it writes under out/
    if script in ("sample.py", "bench_prepare.py", "docs/measurements/mfu_both_ways.py",
                  "docs/measurements/sigint_latency.py"):
        return []
    if script in ("bench.py", "gpu_tests/fp8_check.py", "gpu_tests/muon_bench.py"):
        return [_option(args, "--json")] if _option(args, "--json") else []
    if script == "mup.py":  # tests/test_mup.py checks that this is where the PNG goes
        return [_option(args, "--out") or f"out/coord_check_{'sp' if '--sp' in args else 'mup'}.png"]
    if script == "convert_hf.py":
        return [args[2] + "/config.json"]
    if script == "eval_reasoning.py":
        if "--list" in args:  # prints only
            return []
        return [(_option(args, "--out") or args[0] + "/eval_reasoning") + ".json"]
    if script == "gpu_tests/proxy_speed.py":
        return [(_option(args, "--out") or "out/proxy_speed") + "/proxy_table.md"]
    if script == "docs/measurements/recipe_tokenize_bench.py":  # writes to the folder it is given
        return []
    if script == "experiments.py":
        return [_option(args, "--out") or f"out/exp_{args[0]}/report.md"]
    if script == "schedule.py":
        return [_option(args, "--out")] if _option(args, "--out") else []
    raise AssertionError(f"README runs {script}: add what it writes to written_paths")


def test_what_the_readme_commands_write_is_ignored_by_git(tmp_path):
    paths = sorted({p for argv in readme_commands() for p in written_paths(argv)})
    assert len(paths) >= 8, paths
    # a throwaway repository holding only .gitignore: the check needs no clone, only git
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    shutil.copy(ROOT / ".gitignore", tmp_path / ".gitignore")
    tracked = [p for p in paths if subprocess.run(["git", "check-ignore", "-q", "--no-index", p],
                                                  cwd=tmp_path).returncode != 0]
    assert not tracked, f"README commands write files git would show as untracked: {tracked}"
