#!/usr/bin/env python3
"""Run every shell block of README.md and docs/**/*.md whose fence is marked runnable.

A block is runnable when its opening fence's info string is a shell language followed by the word
`runnable`:

    ```sh runnable
    mpirun -np 2 build/release/examples/c_api_min
    ```

Each block runs with `bash -e -o pipefail` from the repository root, in a fresh temporary
directory given as TMPDIR, with OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1 in the
environment, and a time limit (--timeout, default 60 s) after which its whole process group is
killed. A build folder other than build/release (--build-dir) replaces `build/release` in the
blocks. A failing block is reported as FILE:LINE (the line of its opening fence) with the tail of
its output; the exit status is 1 if any block failed, or if no runnable block was found at all.
"""
import argparse
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time

FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*(.*)$")
SHELLS = {"sh", "bash", "shell", "console"}


def blocks_in(path, root):
    """(file:line, text) of every runnable shell block in path; raises on an unclosed fence."""
    found = []
    lines = path.read_text(encoding="utf-8").split("\n")
    rel = path.relative_to(root).as_posix()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = m.groups()
        start = i + 1  # 1-based line of the opening fence
        body = []
        i += 1
        while i < len(lines):
            close = FENCE.match(lines[i])
            if close and close.group(2)[0] == fence[0] and len(close.group(2)) >= len(fence) \
                    and not close.group(3).strip():
                break
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        else:
            raise SystemExit(f"{rel}:{start}: code block never closed")
        i += 1
        words = info.split()
        if len(words) >= 2 and words[0] in SHELLS and "runnable" in words[1:]:
            found.append((f"{rel}:{start}", "\n".join(body) + "\n"))
    return found


def documents(root):
    paths = [root / "README.md"]
    docs = root / "docs"
    if docs.is_dir():
        paths += sorted(docs.rglob("*.md"))
    return [p for p in paths if p.is_file()]


def run_block(where, text, root, timeout, env):
    with tempfile.TemporaryDirectory(prefix="sy-doc-block-") as tmp:
        script = pathlib.Path(tmp) / "block.sh"
        script.write_text(text)
        block_env = dict(env, TMPDIR=tmp)
        began = time.monotonic()
        proc = subprocess.Popen(["bash", "-e", "-o", "pipefail", str(script)], cwd=root,
                                env=block_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            timed_out = True
        seconds = time.monotonic() - began
    return proc.returncode, timed_out, seconds, out.decode("utf-8", "replace")


def main():
    here = pathlib.Path(__file__).resolve()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=pathlib.Path, default=here.parents[2],
                        help="repository root (default: this script's)")
    parser.add_argument("--build-dir", type=pathlib.Path, default=None,
                        help="build folder (default: ROOT/build/release)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds each block may take (default %(default)s)")
    parser.add_argument("--list", action="store_true", help="list the runnable blocks, run none")
    parser.add_argument("--only", action="append", default=[], metavar="FILE:LINE",
                        help="run only this block (repeatable)")
    args = parser.parse_args()

    root = args.root.resolve()
    blocks = [b for p in documents(root) for b in blocks_in(p, root)]
    if args.only:
        blocks = [b for b in blocks if b[0] in args.only]
    if not blocks:
        print("run_doc_blocks: no runnable blocks found (marked ```sh runnable)", file=sys.stderr)
        return 1
    if args.list:
        for where, text in blocks:
            print(f"{where}\n{text}")
        return 0

    default_build = root / "build" / "release"
    build = (args.build_dir or default_build).resolve()
    if not (build / "examples").is_dir():
        print(f"run_doc_blocks: no build at {build} (build it, or pass --build-dir)",
              file=sys.stderr)
        return 1
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OPENBLAS_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")

    failed = []
    total = time.monotonic()
    for where, text in blocks:
        if build != default_build:
            text = text.replace("build/release", str(build))
        rc, timed_out, seconds, out = run_block(where, text, root, args.timeout, env)
        if rc == 0 and not timed_out:
            print(f"ok      {where} ({seconds:.1f} s)", flush=True)
            continue
        why = f"timed out after {args.timeout:g} s" if timed_out else f"exit status {rc}"
        print(f"FAILED  {where} ({why}, {seconds:.1f} s)\n--- block:\n{text}--- output (tail):",
              flush=True)
        print("\n".join(out.rstrip("\n").split("\n")[-40:]), flush=True)
        print("---", flush=True)
        failed.append(f"{where}: {why}")
    print(f"{len(blocks) - len(failed)} of {len(blocks)} runnable blocks passed in "
          f"{time.monotonic() - total:.1f} s")
    for f in failed:
        print(f"failed: {f}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
