"""Upload throughput and memory of ``cdn.upload_media`` against the sandbox over real HTTP.

    .venv/bin/python bench/bench_upload.py [--size-mb 100] [--runs 3] [--chunk-kb 1024]

The parent process serves a :class:`ilink.sandbox.SandboxServer` on 127.0.0.1, logs a bot in
and lets a user write. Each measurement runs in a fresh child process so that its peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is the client's alone, not the sandbox's
(which buffers whole bodies):

* ``upload``: ``upload_media`` of the file (MD5 pass + getuploadurl + encrypt-and-stream
  POST), then the message is sent and the sandbox's ``delivered()`` sha256 is checked;
* ``encrypt``: the same streaming encryption without the network (file → /dev/null);
* ``idle``: the child's imports only (the RSS floor);
* ``openssl enc -aes-128-ecb`` on the same file, for the raw cipher speed of this machine.

Prints a table and writes ``bench/results/upload.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

USER = "bench-user@im.wechat"
MiB = 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ---------------------------------------------------------------------------- child side


async def _child_upload(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    from ilinkbot.cdn import upload_media
    from ilinkbot.ilink.client import IlinkClient, build_send_body
    from ilinkbot.ilink.wire import new_client_id

    path = Path(args.file)
    async with httpx.AsyncClient() as http:
        client = IlinkClient(args.api, args.token, http=http)
        started = time.perf_counter()
        up = await upload_media(
            client, args.cdn, path, to_user_id=USER, chunk_size=args.chunk_kb * 1024
        )
        upload_s = time.perf_counter() - started
        body = build_send_body(
            USER, up.to_item(), client_id=new_client_id(), context_token=args.context_token
        )
        ack = await client.send_message(body)
    return {
        "seconds": upload_s,
        "ciphertext_size": up.ciphertext_size,
        "message_id": ack.message_id,
    }


def _child_encrypt(args: argparse.Namespace) -> dict[str, Any]:
    from ilinkbot.cdn.crypto import StreamEncryptor, iter_file_chunks

    started = time.perf_counter()
    enc = StreamEncryptor(os.urandom(16))
    size = 0
    with open(os.devnull, "wb") as sink:
        for chunk in iter_file_chunks(Path(args.file), args.chunk_kb * 1024):
            out = enc.update(chunk)
            size += len(out)
            sink.write(out)
        size += len(enc.finalize())
    return {"seconds": time.perf_counter() - started, "ciphertext_size": size}


def child_main(args: argparse.Namespace) -> int:
    from ilinkbot.ilink.log import configure_logging

    configure_logging(level="warning", json=True)  # logs to stderr; stdout is the result
    import httpx  # noqa: F401

    import ilinkbot.cdn  # noqa: F401  (same imports in every mode, so "idle" is the floor)

    if args.child == "serve":
        return serve_main()
    if args.child == "upload":
        result = asyncio.run(_child_upload(args))
    elif args.child == "encrypt":
        result = _child_encrypt(args)
    else:
        result = {"seconds": 0.0}
    result["peak_rss_mib"] = round(_peak_rss_mib(), 1)
    print(json.dumps(result))
    return 0


# ---------------------------------------------------------------------------- parent side


def _run_child(mode: str, file: Path, chunk_kb: int, **extra: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", mode, "--file", str(file)]
    cmd += ["--chunk-kb", str(chunk_kb)]
    for key, value in extra.items():
        cmd += [f"--{key.replace('_', '-')}", value]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _openssl(file: Path) -> float | None:
    exe = shutil.which("openssl")
    if exe is None:
        return None
    key = os.urandom(16).hex()
    started = time.perf_counter()
    subprocess.run(
        [exe, "enc", "-aes-128-ecb", "-K", key, "-in", str(file), "-out", os.devnull],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def _md5_seconds(file: Path, chunk_kb: int) -> float:
    """One MD5 pass over ``file`` in the chunks upload_media reads."""
    started = time.perf_counter()
    digest = hashlib.md5(usedforsecurity=False)
    with file.open("rb") as f:
        while chunk := f.read(chunk_kb * 1024):
            digest.update(chunk)
    return time.perf_counter() - started


def _make_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as fh:
        for start in range(0, size, MiB):
            part = os.urandom(min(MiB, size - start))
            fh.write(part)
            digest.update(part)
    return digest.hexdigest()


async def _issue_qr(api: str) -> None:
    import httpx

    from ilinkbot.ilink.client import IlinkClient

    async with httpx.AsyncClient() as http:
        await IlinkClient(api, http=http).get_bot_qrcode()


def serve_main() -> int:
    """Child mode ``serve``: the sandbox over HTTP, driven by JSON lines on stdin/stdout."""
    from ilinkbot.ilink.log import configure_logging
    from ilinkbot.ilink.sandbox import Sandbox, SandboxServer

    configure_logging(level="warning", json=True)
    sb = Sandbox(quota=1000)
    with SandboxServer(sb, "127.0.0.1", 0) as server:
        print(json.dumps({"api": server.base_url, "cdn": server.cdn_base_url}), flush=True)
        for line in sys.stdin:
            cmd = json.loads(line)["cmd"]
            if cmd == "setup":
                asyncio.run(_issue_qr(server.base_url))
                bot = sb.confirm(user_id="owner@im.wechat")
                said = sb.user_says(USER, "bench")
                answer = {"token": bot["bot_token"], "context_token": said["context_token"]}
            else:  # "last"
                delivered = sb.delivered(USER)
                answer = {
                    "delivered": delivered[-1] if delivered else None,
                    "violations": sb.violations(),
                }
            print(json.dumps(answer), flush=True)
    return 0


class _Server:
    """The ``serve`` child, so that the sandbox's memory is not in this process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--child", "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.urls = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("the sandbox process died")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def ask(self, cmd: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def parent_main(args: argparse.Namespace) -> int:
    size = args.size_mb * MiB
    results: dict[str, Any] = {
        "size_bytes": size,
        "runs": args.runs,
        "chunk_bytes": args.chunk_kb * 1024,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory(prefix="ilink-bench-") as tmp:
        file = Path(tmp) / "payload.bin"
        sha = _make_file(file, size)

        server = _Server()
        try:
            login = server.ask("setup")
            uploads = []
            for _ in range(args.runs):
                r = _run_child(
                    "upload",
                    file,
                    args.chunk_kb,
                    api=server.urls["api"],
                    cdn=server.urls["cdn"],
                    token=login["token"],
                    context_token=login["context_token"],
                )
                check = server.ask("last")
                delivered = check["delivered"]
                if check["violations"]:
                    raise SystemExit(f"sandbox violations: {check['violations']}")
                if not delivered or delivered["sha256"] != sha or delivered["size"] != size:
                    raise SystemExit(f"delivered media does not match the file: {delivered}")
                uploads.append(r)
        finally:
            server.close()

        encrypts = [_run_child("encrypt", file, args.chunk_kb) for _ in range(args.runs)]
        idle = _run_child("idle", file, args.chunk_kb)
        openssl = [t for t in (_openssl(file) for _ in range(args.runs)) if t is not None]
        md5s = [_md5_seconds(file, args.chunk_kb) for _ in range(args.runs)]
    results["parent_peak_rss_mib"] = round(_peak_rss_mib(), 1)

    def mbps(seconds: list[float]) -> float:
        return float(round(size / MiB / float(statistics.median(seconds)), 1))

    upload_rss = float(max(u["peak_rss_mib"] for u in uploads))
    rows: list[tuple[str, float | None, float | None]] = [
        (
            "cdn upload_media → sandbox (HTTP)",
            mbps([u["seconds"] for u in uploads]),
            upload_rss,
        ),
        (
            "cdn StreamEncryptor → /dev/null",
            mbps([e["seconds"] for e in encrypts]),
            max(e["peak_rss_mib"] for e in encrypts),
        ),
        ("openssl enc -aes-128-ecb → /dev/null", mbps(openssl) if openssl else None, None),
        ("hashlib.md5 of the file (the protocol's first pass)", mbps(md5s), None),
        ("child process, imports only", None, idle["peak_rss_mib"]),
    ]
    results["upload"] = {
        "seconds": [round(u["seconds"], 3) for u in uploads],
        "mib_per_s_median": rows[0][1],
        "peak_rss_mib": rows[0][2],
        "delivered_sha256_ok": True,
    }
    results["encrypt_only"] = {
        "seconds": [round(e["seconds"], 3) for e in encrypts],
        "mib_per_s_median": rows[1][1],
        "peak_rss_mib": rows[1][2],
    }
    results["openssl"] = {"seconds": [round(t, 3) for t in openssl], "mib_per_s_median": rows[2][1]}
    # getuploadurl needs the plaintext MD5 before the first byte goes out, so no conforming
    # client can upload faster than it can hash: this is the ceiling of the upload ratio.
    results["md5"] = {"seconds": [round(t, 3) for t in md5s], "mib_per_s_median": rows[3][1]}
    results["idle_peak_rss_mib"] = idle["peak_rss_mib"]
    results["upload_rss_over_idle_mib"] = round(upload_rss - idle["peak_rss_mib"], 1)

    print(f"\nfile: {args.size_mb} MiB, chunk {args.chunk_kb} KiB, median of {args.runs} runs\n")
    print(f"{'what':<40} {'MiB/s':>9} {'peak RSS MiB':>13}")
    print("-" * 64)
    for name, speed, rss in rows:
        s = f"{speed:>9.1f}" if speed is not None else f"{'-':>9}"
        m = f"{rss:>13.1f}" if rss is not None else f"{'-':>13}"
        print(f"{name:<40} {s} {m}")
    print(
        f"\nupload peak RSS over the import floor: {results['upload_rss_over_idle_mib']} MiB "
        f"for a {args.size_mb} MiB file"
    )
    out = ROOT / "bench" / "results" / "upload.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size-mb", type=int, default=100)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--chunk-kb", type=int, default=1024)
    p.add_argument(
        "--child", choices=["serve", "upload", "encrypt", "idle"], help=argparse.SUPPRESS
    )
    p.add_argument("--file", default="", help=argparse.SUPPRESS)
    p.add_argument("--api", help=argparse.SUPPRESS)
    p.add_argument("--cdn", help=argparse.SUPPRESS)
    p.add_argument("--token", help=argparse.SUPPRESS)
    p.add_argument("--context-token", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    return child_main(args) if args.child else parent_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
