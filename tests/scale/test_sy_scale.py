"""sy-scale end to end: a small sweep on 1-2 ranks gives a well-formed results file, CSV and
plots; a point past its time bound is marked failed and the sweep goes on; compare mode; bad sweep
descriptions are refused with a message that says what to change."""
import json
import os
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.realpath(__file__))
TOOL = os.path.join(HERE, "..", "..", "tools", "sy-scale", "sy-scale")
sys.path[:0] = [os.path.dirname(TOOL), os.path.join(HERE, "..", "..", "tools", "common")]

from syscale import results as res  # noqa: E402
from syscale.runner import command_for  # noqa: E402
from syscale.sweep import SweepError, points, validate_sweep  # noqa: E402


def sy_scale(*args):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True,
                          timeout=600)


class SweepRuns(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def write_sweep(self, doc):
        path = os.path.join(self.dir, "sweep.json")
        with open(path, "w") as f:
            json.dump(doc, f)
        return path

    def test_small_weak_sweep_produces_results_csv_and_plots(self):
        sweep = self.write_sweep({"mode": "weak", "tokens_per_rank": 64,
                                  "args": {"preset": "tiny", "steps": 4},
                                  "axes": {"ranks": [1, 2]}, "timeout_s": 120, "retries": 1})
        out = os.path.join(self.dir, "r.json")
        run = sy_scale("run", sweep, "--out", out, "--plots", os.path.join(self.dir, "plots"))
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertIn("[2/2]", run.stdout)
        with open(out) as f:
            doc = json.load(f)
        self.assertEqual(doc["format"], res.FORMAT)
        self.assertIn("cpus", doc["machine"])
        self.assertTrue(doc["git_commit"])
        self.assertEqual([p["params"]["ranks"] for p in doc["points"]], [1, 2])
        for p in doc["points"]:
            self.assertEqual(p["status"], "ok", p.get("errors"))
            self.assertIn("mpirun", p["command"])
            self.assertIn("-np " + str(p["params"]["ranks"]), p["command"])
            r = p["result"]
            self.assertEqual(r["ranks"], p["params"]["ranks"])
            self.assertEqual(r["tokens_per_rank"], 64)
            self.assertGreater(r["tokens_per_s"], 0)
            self.assertLessEqual(r["step_ms"]["p10"], r["step_ms"]["median"])
            self.assertLessEqual(r["step_ms"]["median"], r["step_ms"]["p90"])
        self.assertAlmostEqual(doc["points"][0]["efficiency"], 1.0)
        with open(os.path.join(self.dir, "r.csv")) as f:
            header = f.readline()
            self.assertEqual(len(f.readlines()), 2)
        self.assertIn("tokens_per_s", header)
        for name in ("throughput.svg", "efficiency.svg", "split.svg"):
            root = ET.parse(os.path.join(self.dir, "plots", name)).getroot()
            self.assertTrue(root.tag.endswith("svg"), name)

    def test_a_point_past_its_time_bound_fails_and_the_sweep_continues(self):
        sweep = self.write_sweep({"mode": "weak", "tokens_per_rank": 32,
                                  "args": {"preset": "tiny"},
                                  "axes": {"steps": [100000, 2], "ranks": [1]},
                                  "timeout_s": 3, "retries": 1})
        out = os.path.join(self.dir, "r.json")
        run = sy_scale("run", sweep, "--out", out)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        with open(out) as f:
            doc = json.load(f)
        slow, fast = doc["points"]
        self.assertEqual(slow["status"], "failed")
        self.assertEqual(slow["attempts"], 2)
        self.assertIn("timed out", slow["errors"][-1])
        self.assertEqual(fast["status"], "ok")
        self.assertIn("1 points ok, 1 failed", run.stdout)
        leftover = subprocess.run(["pgrep", "-f", "train_moe.*--steps 100000"],
                                  capture_output=True, text=True)
        self.assertEqual(leftover.stdout.strip(), "", "a rank outlived its time bound")


class Compare(unittest.TestCase):
    def results_with(self, tokens_per_s, step_ms):
        point = {"params": {"ranks": 2, "tokens_per_rank": 64}, "status": "ok",
                 "command": "mpirun", "result": {"tokens_per_s": tokens_per_s,
                                                 "step_ms": {"median": step_ms}}}
        return {"format": res.FORMAT, "git_commit": "abc", "started": "now", "points": [point]}

    def test_ratios(self):
        text = res.compare(self.results_with(1000, 20), self.results_with(1500, 10))
        line = [l for l in text.splitlines() if l.startswith("ranks=2")][0]
        self.assertEqual(line.split()[-4:], ["1.50", "20.0", "10.0", "0.50"])

    def test_compare_command_refuses_other_files(self):
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump({"format": "other"}, f)
        run = sy_scale("compare", f.name, f.name)
        os.unlink(f.name)
        self.assertEqual(run.returncode, 2)
        self.assertIn("not a switchyard-scale/v1", run.stderr)


class SweepDescriptions(unittest.TestCase):
    def test_strong_scaling_divides_the_global_batch(self):
        sweep = validate_sweep({"mode": "strong", "global_tokens": 512,
                                "axes": {"ranks": [1, 2, 4]}})
        self.assertEqual([p["tokens_per_rank"] for p in points(sweep)], [512, 256, 128])

    def test_axes_expand_with_ranks_fastest(self):
        sweep = validate_sweep({"axes": {"ranks": [1, 2], "alltoall": ["flat", "hierarchical"]}})
        self.assertEqual([(p["alltoall"], p["ranks"]) for p in points(sweep)],
                         [("flat", 1), ("flat", 2), ("hierarchical", 1), ("hierarchical", 2)])

    def test_simulated_cluster_points_launch_through_simcluster(self):
        sweep = validate_sweep({"axes": {"nodes": [1, 2], "ranks_per_node": [3]},
                                "args": {"preset": "tiny"}})
        p = points(sweep)
        self.assertEqual([(x["nodes"], x["ranks"]) for x in p], [(1, 3), (2, 6)])
        cmd = command_for(p[1], "/bin/train_moe", "/tmp/x.json")
        self.assertTrue(cmd[0].endswith("tools/simcluster/simcluster"))
        self.assertEqual(cmd[cmd.index("--ranks-per-node") + 1], "3")
        self.assertEqual(cmd[cmd.index("-np") + 1], "6")
        self.assertNotIn("--nodes", cmd)
        self.assertEqual(command_for({"ranks": 2}, "/bin/t", "/tmp/x.json")[0], "mpirun")

    def test_srun_points_launch_through_slurmcluster(self):
        sweep = validate_sweep({"launcher": "srun", "axes": {"nodes": [2], "ranks_per_node": [3]},
                                "args": {"preset": "tiny"}})
        cmd = command_for(points(sweep)[0], "/bin/train_moe", "/tmp/x.json", "srun")
        self.assertTrue(cmd[0].endswith("tools/slurm/slurmcluster"))
        run = cmd[cmd.index("--") + 1:]
        self.assertEqual(run[:4], ["-N", "2", "--ntasks-per-node", "3"])
        self.assertEqual(run[4], "/bin/train_moe")
        self.assertNotIn("-np", cmd)
        one_node = command_for({"ranks": 4}, "/bin/t", "/tmp/x.json", "srun")
        self.assertEqual(one_node[one_node.index("--") + 1:][:3], ["-n", "4", "/bin/t"])

    def test_bad_descriptions_say_what_to_change(self):
        cases = [({"axes": {}}, "ranks"),
                 ({"axes": {"ranks": [1], "nodes": [1]}}, "not both"),
                 ({"axes": {"ranks": [2], "ranks_per_node": [2]}}, "ranks_per_node"),
                 ({"axes": {"ranks": [1], "colour": [1]}}, "colour"),
                 ({"mode": "sideways", "axes": {"ranks": [1]}}, "sideways"),
                 ({"mode": "strong", "global_tokens": 10, "axes": {"ranks": [3]}}, "divide"),
                 ({"args": {"wings": 2}, "axes": {"ranks": [1]}}, "wings"),
                 ({"mode": "strong", "global_tokens": 8, "axes": {"ranks": [0]}}, ">= 1"),
                 ({"axes": {"ranks": [1], "seed": list(range(1001))}}, "at most 1000"),
                 ({"axes": {"ranks": [1]}, "retries": 10**9}, "retries"),
                 ({"axes": {"ranks": [True]}}, "integer"),
                 ({"axes": {"ranks": [1]}, "launcher": "qsub"}, "use mpirun or srun"),
                 ({"axes": {"ranks": [1]}, "launcher": 3}, "launcher")]
        for doc, word in cases:
            with self.assertRaises(SweepError) as ctx:
                validate_sweep(doc)
            self.assertIn(word, str(ctx.exception))


class DefaultTrainMoe(unittest.TestCase):
    def test_default_is_the_repository_build(self):
        from syscale import cli
        saved = os.environ.pop("SY_TRAIN_MOE", None)
        try:
            repo = os.path.realpath(os.path.join(HERE, "..", ".."))
            self.assertEqual(cli.default_train_moe(),
                             os.path.join(repo, "build", "release", "examples", "train_moe"))
        finally:
            if saved is not None:
                os.environ["SY_TRAIN_MOE"] = saved


if __name__ == "__main__":
    unittest.main()
