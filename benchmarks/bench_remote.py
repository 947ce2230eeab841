"""Publishing a job to object storage and merging it from there (issue 29): a 512-rank job's files
(``gen_rank_files.py``) published to moto's S3 server -- each file under a temporary key, read back and compared
by sha256, copied to its final key and compared again -- then ``prov4torch merge s3://...`` of the job, against
the same merge from the local directory, in one invocation.

    python benchmarks/bench_remote.py [--ranks 512]

Needs the test extras (s3fs) and ``.venv-moto`` (``scripts/bootstrap.sh``). The server is local, so the figures
are prov4torch's cost (hashing, the verifying reads, the fetch), not a network's.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent


def moto() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(HERE.parent / ".venv-moto" / "bin" / "moto_server"), "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=2).close()
            return proc, endpoint
        except OSError:
            time.sleep(0.2)
    raise SystemExit("moto_server did not start")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranks", type=int, default=512)
    a = ap.parse_args()
    server, endpoint = moto()
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1", "FSSPEC_S3_ENDPOINT_URL": endpoint})
    try:
        import fsspec

        from prov4torch.remote import publish

        fs = fsspec.filesystem("s3", endpoint_url=endpoint)
        fs.mkdir("bench")
        with tempfile.TemporaryDirectory() as tmp:
            job = Path(tmp) / "job"
            subprocess.run([sys.executable, str(HERE / "gen_rank_files.py"), str(job), "--ranks", str(a.ranks)],
                           check=True, stdout=subprocess.DEVNULL)
            files = [p for p in job.rglob("*") if p.is_file()]
            size = sum(p.stat().st_size for p in files)
            t = time.perf_counter()
            local = subprocess.run([sys.executable, "-m", "prov4torch_cli.app", "merge", str(job), "-o",
                                    str(Path(tmp) / "local.prov.json")], capture_output=True, text=True)
            merge_local = time.perf_counter() - t
            t = time.perf_counter()
            done = publish(job, "s3://bench/job", keep=True)
            upload = time.perf_counter() - t
            assert not done.failed, done.note()
            t = time.perf_counter()
            remote = subprocess.run([sys.executable, "-m", "prov4torch_cli.app", "merge", "s3://bench/job", "-o",
                                     str(Path(tmp) / "remote.prov.json")], capture_output=True, text=True)
            merge_remote = time.perf_counter() - t
            assert local.returncode == 0 and remote.returncode == 0, (local.stderr, remote.stderr)
            same = (Path(tmp) / "local.prov.json").read_bytes() == (Path(tmp) / "remote.prov.json").read_bytes()
        print(f"{a.ranks} ranks, {len(files)} files, {size / 1e6:.1f} MB | publish (verified) {upload:.1f} s | "
              f"merge from the bucket {merge_remote:.1f} s vs from the local directory {merge_local:.1f} s "
              f"({merge_remote / merge_local:.2f}x) | same bytes: {same}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
