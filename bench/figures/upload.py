"""Figure 3, ``upload``: ``bench/bench_upload.py`` (CDN upload MB/s vs ``openssl enc
-aes-128-ecb``, peak RSS of the uploading process)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from harness import PY, RESULTS, ROOT, Row, met

NAME = "upload"
TARGET = ">= 50% of openssl, peak RSS < 100 MB"


def measure(quick: bool) -> dict[str, Any]:
    size, runs = (20, 1) if quick else (100, 3)
    subprocess.run(
        [PY, str(ROOT / "bench" / "bench_upload.py"), "--size-mb", str(size), "--runs", str(runs)],
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    data = json.loads((RESULTS / "upload.json").read_text())
    up = data["upload"]["mib_per_s_median"]
    ssl = data["openssl"]["mib_per_s_median"]
    rss = data["upload"]["peak_rss_mib"]
    ratio = round(up / ssl, 3) if ssl else None
    return {
        "size_mib": size,
        "runs": runs,
        "upload_mib_per_s": up,
        "openssl_mib_per_s": ssl,
        "encrypt_only_mib_per_s": data["encrypt_only"]["mib_per_s_median"],
        "md5_mib_per_s": data["md5"]["mib_per_s_median"],
        # the ceiling for any client: the plaintext MD5 pass must finish before uploading
        "md5_ceiling_ratio": round(data["md5"]["mib_per_s_median"] / ssl, 3) if ssl else None,
        "ratio": ratio,
        "peak_rss_mib": rss,
        "idle_peak_rss_mib": data["idle_peak_rss_mib"],
        "target": TARGET,
        "met": bool(ratio is not None and ratio >= 0.5 and rss * 1.048576 < 100),
    }


def rows(s: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    rows.append(
        (
            f"CDN upload {s['size_mib']} MiB vs openssl",
            f"{s['upload_mib_per_s']} MiB/s",
            f"{s['openssl_mib_per_s']} MiB/s",
            f"{s['ratio']:.2f}",
            met(s["met"]),
        )
    )
    rows.append(
        (
            "  ceiling: MD5 pass before upload",
            f"{s['md5_mib_per_s']} MiB/s",
            f"{s['openssl_mib_per_s']} MiB/s",
            f"{s['md5_ceiling_ratio']:.2f}",
            "-",
        )
    )
    rows.append(
        (
            "CDN upload peak RSS (< 100 MB)",
            f"{s['peak_rss_mib']} MiB",
            f"{s['idle_peak_rss_mib']} MiB idle",
            "-",
            "-",
        )
    )
    return rows
