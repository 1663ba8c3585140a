"""End to end with small sizes: `sy-bench alltoall --json` writes the table's fields and the run's
parameters, `sy-trace bandwidth` turns several runs into a table and a parseable SVG with one curve
per algorithm and phase, and `train_moe --metrics-port` serves every rank's metrics while it
trains."""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "tools"))
from mpirun_flags import mpirun  # noqa: E402  (tools/mpirun.flags, written once)

HERE = os.path.dirname(os.path.realpath(__file__))
TOOL = os.path.join(HERE, "..", "..", "tools", "sy-trace", "sy-trace")
SY_BENCH = os.environ.get("SY_BENCH", "sy-bench")
TRAIN_MOE = os.environ.get("SY_TRAIN_MOE", "train_moe")
MPIRUN = mpirun()
TOKENS = (16, 64)
ROW_FIELDS = ("algorithm", "phase", "median_ms", "min_ms", "iteration_ms", "bytes_sent_per_rank",
              "bytes_across_nodes", "algbw_gb_per_s", "busbw_gb_per_s", "speedup", "errors")


class BenchCurves(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.runs = []
        for tokens in TOKENS:
            path = os.path.join(cls.tmp.name, f"a2a_{tokens}.json")
            cmd = MPIRUN + ["-np", "4", SY_BENCH, "alltoall", "--tokens", str(tokens), "--hidden",
                            "64", "--experts", "16", "--topk", "4", "--iters", "2",
                            "--ranks-per-node", "2", "--json", path]
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            if run.returncode != 0:
                raise AssertionError(f"{' '.join(cmd)} failed:\n{run.stdout}\n{run.stderr}")
            cls.runs.append(path)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_json_has_the_table_and_the_parameters(self):
        for tokens, path in zip(TOKENS, self.runs):
            with open(path) as f:
                doc = json.load(f)
            self.assertEqual(doc["format"], "switchyard-bench-alltoall/v1")
            self.assertEqual((doc["ranks"], doc["nodes"], doc["ranks_per_node"]), (4, 2, 2))
            self.assertTrue(doc["nodes_simulated"])
            params = doc["params"]
            self.assertEqual((params["tokens"], params["hidden"], params["experts"],
                              params["topk"], params["iters"]), (tokens, 64, 16, 4, 2))
            self.assertEqual(doc["message_bytes_per_rank"], tokens * 4 * 64 * 4)
            got = {(r["algorithm"], r["phase"]) for r in doc["results"]}
            self.assertEqual(got, {(a, p) for a in ("mpi", "flat", "hierarchical")
                                   for p in ("dispatch", "combine")})
            for row in doc["results"]:
                for field in ROW_FIELDS:
                    self.assertIn(field, row)
                self.assertEqual(row["errors"], 0)
                self.assertEqual(len(row["iteration_ms"]), 2)
                self.assertLessEqual(row["min_ms"], row["median_ms"])
                self.assertGreater(row["bytes_sent_per_rank"], 0)
                self.assertGreater(row["bytes_across_nodes"], 0)
                self.assertAlmostEqual(row["busbw_gb_per_s"], row["algbw_gb_per_s"] * 3 / 4)
                self.assertAlmostEqual(
                    row["algbw_gb_per_s"],
                    doc["message_bytes_per_rank"] / (row["median_ms"] / 1e3) / 1e9, places=6)
                if row["algorithm"] == "mpi":
                    self.assertAlmostEqual(row["speedup"], 1.0)

    def test_bandwidth_table_and_svg(self):
        svg = os.path.join(self.tmp.name, "curve.svg")
        run = subprocess.run([sys.executable, TOOL, "bandwidth", *reversed(self.runs), "--out",
                              svg], capture_output=True, text=True, timeout=60)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertIn("busbw GB/s", run.stdout)
        lines = [l for l in run.stdout.splitlines() if l.strip().startswith("hierarchical")]
        self.assertEqual(len(lines), 2 * len(TOKENS))  # both phases at every size
        root = ET.parse(svg).getroot()
        ns = "{http://www.w3.org/2000/svg}"
        curves = root.findall(f"{ns}polyline")
        self.assertEqual(len(curves), 6)  # 3 algorithms x 2 phases
        for curve in curves:
            self.assertEqual(len(curve.get("points").split()), len(TOKENS))
        legend = {t.text for t in root.iter(f"{ns}text")}
        self.assertIn("hierarchical combine", legend)

    def test_bandwidth_rejects_other_files(self):
        other = os.path.join(self.tmp.name, "other.json")
        with open(other, "w") as f:
            json.dump({"format": "switchyard-train/v1"}, f)
        run = subprocess.run([sys.executable, TOOL, "bandwidth", other], capture_output=True,
                             text=True, timeout=60)
        self.assertEqual(run.returncode, 2)
        self.assertIn("sy-bench alltoall --json", run.stderr)


def free_port_pair():
    """A port P with P and P + 1 free just now (train_moe serves rank r on P + r)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise AssertionError("no two consecutive free ports")


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.headers["Content-Type"], r.read().decode()


class TrainMoeMetrics(unittest.TestCase):
    def test_every_rank_serves_while_training(self):
        port = free_port_pair()
        cmd = MPIRUN + ["-np", "2", TRAIN_MOE, "--preset", "tiny", "--tokens-per-rank", "64",
                        "--steps", "150", "--metrics-port", str(port)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            served = {}
            deadline = time.monotonic() + 100
            while len(served) < 2 and proc.poll() is None and time.monotonic() < deadline:
                for rank in (0, 1):
                    try:
                        ctype, body = scrape(port + rank)
                    except OSError:
                        continue
                    if f'switchyard_dispatch_seconds_count{{rank="{rank}",pass="forward"}} 0' \
                            not in body:
                        served[rank] = (ctype, body)
                time.sleep(0.05)
            out, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        self.assertEqual(proc.returncode, 0, out)
        self.assertIn("metrics: rank r serves", out)
        self.assertEqual(sorted(served), [0, 1], "no scrape saw a forward pass while training")
        for rank, (ctype, body) in served.items():
            self.assertEqual(ctype, "text/plain; version=0.0.4; charset=utf-8")
            self.assertIn(f'switchyard_device_imbalance{{rank="{rank}"}}', body)


if __name__ == "__main__":
    unittest.main()
