"""train_moe --trace end to end: the merged trace is valid Chrome trace-event JSON (one process per
rank, named tracks, per-track timestamps in order), sy-trace reports on it and draws parseable
SVGs, and a rank deliberately delayed is the one sy-trace names as the straggler."""
import json
import os
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "tools"))
from mpirun_flags import mpirun  # noqa: E402  (tools/mpirun.flags, written once)

HERE = os.path.dirname(os.path.realpath(__file__))
TOOL = os.path.join(HERE, "..", "..", "tools", "sy-trace", "sy-trace")
TRAIN_MOE = os.environ.get("SY_TRAIN_MOE", "train_moe")


def train(ranks, *args, env=None):
    cmd = mpirun("-np", str(ranks), TRAIN_MOE,
                 "--preset", "tiny", "--tokens-per-rank", "64", *args)
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                         env={**os.environ, **(env or {})})
    if run.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{run.stdout}\n{run.stderr}")
    return run


def sy_trace(*args):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True,
                          timeout=120)


class TraceFile(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.path = os.path.join(cls.tmp.name, "trace.json")
        # Two ranks with re-planning (18 slots over 2 ranks), so migrations are traced too; the
        # path comes from the environment to cover SWITCHYARD_TRACE.
        train(2, "--steps", "6", "--skew", "1.5", "--replan-every", "3",
              "--redundant", "2", env={"SWITCHYARD_TRACE": cls.path})
        with open(cls.path) as f:
            cls.doc = json.load(f)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_chrome_trace_structure(self):
        events = self.doc["traceEvents"]
        names = {e["pid"]: e["args"]["name"] for e in events
                 if e["ph"] == "M" and e["name"] == "process_name"}
        self.assertEqual(sorted(names), [0, 1])
        tracks = {(e["pid"], e["args"]["name"]) for e in events
                  if e["ph"] == "M" and e["name"] == "thread_name"}
        for pid in (0, 1):
            for track in ("compute", "dispatch", "combine", "collectives"):
                self.assertIn((pid, track), tracks)
        complete = [e for e in events if e["ph"] == "X"]
        self.assertTrue(complete)
        for e in complete:
            for field in ("name", "cat", "pid", "tid", "ts", "dur", "args"):
                self.assertIn(field, e)
            self.assertGreaterEqual(e["dur"], 0)
            for arg in ("phase", "pass", "step"):
                self.assertIn(arg, e["args"])
        phases = {e["name"] for e in complete}
        for p in ("gate", "dispatch", "experts", "combine", "shared", "combine_bwd",
                  "dispatch_bwd", "grad_reduce", "replan"):
            self.assertIn(p, phases)
        comm = [e for e in complete if e["name"] in ("dispatch", "combine")]
        for e in comm:
            for arg in ("bytes_sent", "bytes_recv", "peers", "send_bytes", "call"):
                self.assertIn(arg, e["args"])

    def test_timestamps_monotone_per_track(self):
        last = {}
        for e in self.doc["traceEvents"]:
            if e["ph"] != "X":
                continue
            key = (e["pid"], e["tid"])
            self.assertGreaterEqual(e["ts"], last.get(key, float("-inf")), e)
            last[key] = e["ts"] + e["dur"]
        check = sy_trace("check", self.path)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)

    def test_clock_metadata(self):
        clock = self.doc["otherData"]["clock"]
        self.assertEqual(len(clock["offset_ns"]), 2)
        self.assertEqual(clock["residual_ns"][0], 0)
        self.assertGreater(clock["residual_ns"][1], 0)

    def test_report_and_plots(self):
        plots = os.path.join(self.tmp.name, "plots")
        out = os.path.join(self.tmp.name, "report.json")
        rep = sy_trace("report", self.path, "--plots", plots, "--json", out, "--step", "4")
        self.assertEqual(rep.returncode, 0, rep.stdout + rep.stderr)
        for section in ("time per phase", "link class", "overlapped", "traffic matrix",
                        "stragglers"):
            self.assertIn(section, rep.stdout)
        for name in ("traffic_ranks", "traffic_nodes", "waits", "timeline"):
            root = ET.parse(os.path.join(plots, name + ".svg")).getroot()
            self.assertTrue(root.tag.endswith("svg"))
        with open(out) as f:
            report = json.load(f)
        # The matrix is consistent with the events' own totals: every byte a rank sent to a peer.
        sent = sum(e["args"]["bytes_sent"] for e in self.doc["traceEvents"]
                   if e["ph"] == "X" and "bytes_sent" in e["args"])
        matrix = report["traffic_ranks"]
        self.assertEqual(sent, sum(matrix[r][p] for r in range(2) for p in range(2) if r != p))
        self.assertEqual(report["problems"], [])

    def test_bandwidth_against_a_measured_capacity(self):
        rep = sy_trace("report", self.path, "--capacity", "intra-node=0.01")
        self.assertEqual(rep.returncode, 0, rep.stdout + rep.stderr)
        row = [l for l in rep.stdout.splitlines() if l.strip().startswith("intra-node")][0].split()
        achieved, capacity, percent = float(row[-3]), float(row[-2]), float(row[-1])
        self.assertEqual(capacity, 0.01)
        self.assertGreater(achieved, 0)
        # Both printed rounded: GB/s to 0.01, the percentage to 0.1.
        self.assertAlmostEqual(percent, 100 * achieved / capacity, delta=0.5 / capacity + 0.1)
        bad = sy_trace("report", self.path, "--capacity", "intra-node=fast")
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("CLASS=GBPS", bad.stderr)

    def test_not_a_trace_is_refused(self):
        bad = os.path.join(self.tmp.name, "bad.json")
        with open(bad, "w") as f:
            json.dump({"traceEvents": []}, f)
        rep = sy_trace("report", bad)
        self.assertEqual(rep.returncode, 2)
        self.assertIn("train_moe --trace", rep.stderr)


class Straggler(unittest.TestCase):
    def test_delayed_rank_is_named(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "trace.json")
            train(3, "--steps", "5", "--trace", path,
                  env={"SWITCHYARD_TEST_DELAY_RANK": "1:80"})
            out = os.path.join(tmp, "report.json")
            rep = sy_trace("report", path, "--json", out)
            self.assertEqual(rep.returncode, 0, rep.stdout + rep.stderr)
            with open(out) as f:
                report = json.load(f)
            self.assertEqual(report["waited_on"][0]["rank"], 1, rep.stdout)
            self.assertIn("straggler: rank 1", rep.stdout)


if __name__ == "__main__":
    unittest.main()
