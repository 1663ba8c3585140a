"""train_moe --save/--resume end to end (docs/checkpoints.md).

Resume: an fp64 run of 8 steps against 4 steps, then a resume for 4 more, on the same ranks, with
re-planning and replicas: the same losses (%.17g) and the same bytes of every weight, Adam moment
and selection bias in the final checkpoints. Reshard: 4 ranks save after step 4 (re-planned, with
replicas), 2 and 3 ranks resume from it onto other placements: losses and final tensors within
1e-12 of the 4-rank run. Crash: a run killed before every write of its save leaves a checkpoint
that loads (the previous one, or the new one once published). Refusals: damaged or foreign
checkpoints stop every rank with the file and the reason.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest
from array import array

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "tools"))
from mpirun_flags import mpirun  # noqa: E402  (tools/mpirun.flags, written once)

TRAIN_MOE = os.environ.get("SY_TRAIN_MOE", "train_moe")
COMMON = ["--dtype", "fp64", "--overlap", "off", "--selection-bias", "--skew", "1.0",
          "--replan-every", "2"]
HEADER = struct.Struct("<8sIIQQQQIQI")  # runtime/checkpoint_file.h


def train(ranks, *args, env=None, check=True, mca=()):
    cmd = mpirun(*mca, "-np", str(ranks), TRAIN_MOE, *COMMON, *[str(a) for a in args])
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                         env={**os.environ, **(env or {})})
    if check and run.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{run.stdout}\n{run.stderr}")
    return run


def losses(path):
    """{step: the loss as printed (%.17g)}."""
    with open(path) as f:
        return {int(step): loss for step, loss in (line.split() for line in f)}


def tensors(step_dir):
    """Every tensor of a checkpoint by name (experts by global id), from all its shards."""
    out = {}
    for name in sorted(os.listdir(step_dir)):
        if not name.endswith(".bin"):
            continue
        with open(os.path.join(step_dir, name), "rb") as f:
            data = f.read()
        magic, version, dtype, _, records, index_bytes, _, _, _, _ = HEADER.unpack_from(data)
        assert magic == b"SYCKPT\r\n" and version == 1 and dtype == 2, name
        pos, payload = HEADER.size, HEADER.size + index_bytes
        for _ in range(records):
            (length,) = struct.unpack_from("<I", data, pos)
            tname = data[pos + 4:pos + 4 + length].decode()
            offset, count, _ = struct.unpack_from("<QQI", data, pos + 4 + length)
            pos += 4 + length + 20
            assert tname not in out, f"{tname} saved twice"
            out[tname] = array("d", data[payload + offset:payload + offset + 8 * count])
    return out


def max_differences(a, b):
    """(max abs difference of the weights, max difference relative to each tensor's largest value
    over every tensor, Adam moments included)."""
    assert sorted(a) == sorted(b), (sorted(a), sorted(b))
    weight_abs = rel = 0.0
    for name in a:
        diff = max(abs(x - y) for x, y in zip(a[name], b[name]))
        scale = max(max(abs(x) for x in a[name]), 1e-300)
        rel = max(rel, diff / scale)
        if not name.startswith("adam."):
            weight_abs = max(weight_abs, diff)
    return weight_abs, rel


class Resume(unittest.TestCase):
    def test_resume_is_bit_identical(self):
        with tempfile.TemporaryDirectory() as tmp:
            # Saves after step 3, in the middle of a re-planning window of 2 steps.
            args = ["--global-tokens", 96, "--redundant", 2]
            train(2, *args, "--steps", 8, "--save", f"{tmp}/full",
                  "--loss-log", f"{tmp}/full.txt")
            train(2, *args, "--steps", 3, "--save", f"{tmp}/half", "--loss-log", f"{tmp}/a.txt")
            run = train(2, *args, "--steps", 8, "--resume", f"{tmp}/half", "--save",
                        f"{tmp}/resumed", "--loss-log", f"{tmp}/b.txt")
            self.assertIn("resumed from", run.stdout)
            self.assertIn("placement restored", run.stdout)
            full = losses(f"{tmp}/full.txt")
            self.assertEqual({**losses(f"{tmp}/a.txt"), **losses(f"{tmp}/b.txt")}, full)
            a, b = tensors(f"{tmp}/full/step-8"), tensors(f"{tmp}/resumed/step-8")
            self.assertEqual(sorted(a), sorted(b))
            for name in a:
                self.assertEqual(a[name].tobytes(), b[name].tobytes(), name)
            with open(f"{tmp}/full/step-8/manifest.json") as f:
                full_manifest = json.load(f)
            with open(f"{tmp}/resumed/step-8/manifest.json") as f:
                resumed_manifest = json.load(f)
            for key in ("placement", "optimizer", "state"):
                self.assertEqual(full_manifest[key], resumed_manifest[key], key)
            print(f"resume on 2 ranks after step 3 of 8: {len(full)} losses and {len(a)} "
                  "tensors bit-identical")

    def test_tokens_per_rank_mode_resumes_too(self):
        with tempfile.TemporaryDirectory() as tmp:
            args = ["--tokens-per-rank", 32, "--redundant", 2]
            train(2, *args, "--steps", 4, "--loss-log", f"{tmp}/full.txt")
            train(2, *args, "--steps", 2, "--save", f"{tmp}/ck", "--loss-log", f"{tmp}/a.txt")
            train(2, *args, "--steps", 4, "--resume", f"{tmp}/ck", "--loss-log", f"{tmp}/b.txt")
            self.assertEqual({**losses(f"{tmp}/a.txt"), **losses(f"{tmp}/b.txt")},
                             losses(f"{tmp}/full.txt"))

    def test_tokens_per_rank_mode_warns_when_resharded(self):
        with tempfile.TemporaryDirectory() as tmp:
            args = ["--tokens-per-rank", 32, "--redundant", 0]
            train(2, *args, "--steps", 1, "--save", f"{tmp}/ck")
            run = train(1, *args, "--steps", 2, "--resume", f"{tmp}/ck")
            self.assertIn("warning: resumed on 1 ranks from a checkpoint saved on 2", run.stdout)
            run = train(2, *args, "--steps", 2, "--resume", f"{tmp}/ck")
            self.assertNotIn("warning: resumed", run.stdout)


class Reshard(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        t = cls.tmp.name
        train(4, "--global-tokens", 96, "--redundant", 4, "--steps", 8, "--save", f"{t}/four",
              "--save-every", 4, "--keep-checkpoints", 0, "--loss-log", f"{t}/four.txt")
        cls.reference = losses(f"{t}/four.txt")
        cls.final = tensors(f"{t}/four/step-8")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def reshard(self, ranks, redundant):
        t = self.tmp.name
        with open(f"{t}/four/step-4/manifest.json") as f:
            saved = json.load(f)
        self.assertEqual(saved["world_size"], 4)
        self.assertTrue(any(len(r) > 1 for r in saved["placement"]),
                        "the 4-rank checkpoint should hold replicas")
        run = train(ranks, "--global-tokens", 96, "--redundant", redundant, "--steps", 8,
                    "--resume", f"{t}/four/step-4", "--save", f"{t}/r{ranks}",
                    "--loss-log", f"{t}/r{ranks}.txt")
        self.assertIn("saved on 4 ranks, placement kept (resharded)", run.stdout)
        got = losses(f"{t}/r{ranks}.txt")
        self.assertEqual(sorted(got), [5, 6, 7, 8])
        loss_rel = max(abs(float(got[s]) - float(self.reference[s])) / float(self.reference[s])
                       for s in got)
        weight_abs, tensor_rel = max_differences(self.final, tensors(f"{t}/r{ranks}/step-8"))
        print(f"4 -> {ranks} ranks after step 4 of 8: max relative loss difference "
              f"{loss_rel:.3g}, max weight difference {weight_abs:.3g}, max tensor difference "
              f"relative to its largest value {tensor_rel:.3g}")
        self.assertLessEqual(loss_rel, 1e-12)
        self.assertLessEqual(weight_abs, 1e-12)
        self.assertLessEqual(tensor_rel, 1e-12)

    def test_four_to_two(self):
        self.reshard(2, 2)

    def test_four_to_three(self):
        self.reshard(3, 2)


class Crash(unittest.TestCase):
    def test_a_crash_before_any_write_leaves_a_loadable_checkpoint(self):
        with tempfile.TemporaryDirectory() as tmp:
            args = ["--global-tokens", 32, "--redundant", 2]
            train(2, *args, "--steps", 1, "--save", f"{tmp}/base")
            outcomes = {}
            # SY_CRASH_RANKS: the ranks to crash, so that CTest can run each as its own test.
            for rank in [int(r) for r in os.environ.get("SY_CRASH_RANKS", "0,1").split(",")]:
                n = 0
                while True:
                    n += 1
                    d = f"{tmp}/r{rank}-{n}"
                    shutil.copytree(f"{tmp}/base", d)
                    # The resumed run's only writes are those of its save of step 2.
                    # (mpirun kills the other rank at once instead of after a second.)
                    run = train(2, *args, "--steps", 2, "--resume", d, "--save", d, check=False,
                                env={"SWITCHYARD_CHECKPOINT_CRASH_AFTER": str(n),
                                     "SWITCHYARD_CHECKPOINT_CRASH_RANK": str(rank)},
                                mca=("--mca", "odls_base_sigkill_timeout", "0"))
                    if run.returncode == 0:
                        break  # past the last write of this rank
                    self.assertIn(f"rank {rank} crashes before", run.stderr)
                    point = run.stderr.split("crashes before ")[1].split("\n")[0]
                    # The directory loads (latest, else the newest complete step) ...
                    check = train(2, *args, "--steps", 1, "--resume", d, check=False)
                    self.assertEqual(check.returncode, 0, f"after a crash before {point}:\n"
                                     f"{check.stdout}\n{check.stderr}")
                    step = 2 if f"resumed from {d}/step-2" in check.stdout else 1
                    self.assertIn(f"resumed from {d}/step-{step}", check.stdout)
                    # ... and a step-2 that is there at all is complete (published, not yet
                    # named by latest).
                    if os.path.exists(f"{d}/step-2"):
                        check = train(2, *args, "--steps", 1, "--resume", f"{d}/step-2",
                                      check=False)
                        self.assertEqual(check.returncode, 0, f"step-2 after a crash before "
                                         f"{point}:\n{check.stdout}\n{check.stderr}")
                        step = 2
                    outcomes[(rank, point)] = step
                    self.assertLess(n, 40)
            print(f"{len(outcomes)} crash points: " + "; ".join(
                f"rank {r} before {p} -> step-{s}" for (r, p), s in outcomes.items()))
            self.assertIn(1, outcomes.values())
            if 0 in [r for r, _ in outcomes]:
                self.assertIn(2, outcomes.values())  # rank 0 publishes, then updates latest


class Refusals(unittest.TestCase):
    def test_damaged_and_foreign_checkpoints_are_refused(self):
        with tempfile.TemporaryDirectory() as tmp:
            args = ["--global-tokens", 32, "--redundant", 2]
            train(2, *args, "--steps", 1, "--save", f"{tmp}/ck")
            shard = f"{tmp}/ck/step-1/shard-1.bin"
            with open(shard, "r+b") as f:
                f.seek(-1, os.SEEK_END)
                byte = f.read(1)
                f.seek(-1, os.SEEK_END)
                f.write(bytes([byte[0] ^ 0x40]))
            run = train(2, *args, "--steps", 2, "--resume", f"{tmp}/ck", check=False)
            self.assertNotEqual(run.returncode, 0)
            # Every rank stops with the failing rank, the file and the reason.
            # (The first rank to report aborts the job, so the other's message may not get out;
            # tests/runtime/test_checkpoint_mpi.cpp checks that every rank throws it.)
            self.assertIn(f"rank 1: checkpoint file '{shard}'", run.stderr)
            self.assertIn("is corrupt (CRC32 mismatch)", run.stderr)
            run = train(2, "--global-tokens", 32, "--redundant", 0, "--experts", 8, "--steps", 2,
                        "--resume", f"{tmp}/ck", check=False)
            self.assertNotEqual(run.returncode, 0)
            self.assertIn("config digest", run.stderr)
            self.assertIn("num_experts 16 (layer: 8)", run.stderr)
            run = train(2, *args, "--steps", 2, "--resume", f"{tmp}/none", check=False)
            self.assertIn("is not a directory", run.stderr)


if __name__ == "__main__":
    unittest.main()
