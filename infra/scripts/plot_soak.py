"""Plots the soak's samples (tests/chaos, `make soak`): plot_soak.py SOAK.csv SOAK.png.

Three panels over time: resident memory per process (MiB), Redis keys and table sizes
(MiB), and the clients' request latency per 10 s window (p50, p99, ms).
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src: str, dst: str) -> None:
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"{src}: no samples")
    t = [float(r["t_s"]) / 60 for r in rows]
    cols = list(rows[0].keys())[1:]

    def series(name):
        return [float(r[name]) for r in rows]

    fig, (mem, size, lat) = plt.subplots(3, 1, figsize=(10, 11), sharex=True)
    for c in cols:
        if c.endswith("_rss_mib"):
            mem.plot(t, series(c), label=c.removesuffix("_rss_mib"))
    mem.set_ylabel("RSS (MiB)")
    mem.legend(ncol=5, fontsize=8)
    mem.set_title("soak: memory, storage and latency every 10 s")
    for c in cols:
        if c.endswith("_mib") and not c.endswith("_rss_mib"):
            size.plot(t, series(c), label=c.removesuffix("_mib"))
    size.set_ylabel("table size (MiB)")
    keys = size.twinx()
    keys.plot(t, series("redis_keys"), "k--", label="redis keys")
    keys.set_ylabel("Redis keys")
    size.legend(loc="upper left", fontsize=8)
    keys.legend(loc="lower right", fontsize=8)
    lat.plot(t, series("p50_ms"), label="p50")
    lat.plot(t, series("p99_ms"), label="p99")
    lat.set_ylabel("request latency (ms)")
    lat.set_xlabel("minutes")
    lat.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(dst, dpi=90)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: plot_soak.py SOAK.csv SOAK.png")
    main(sys.argv[1], sys.argv[2])
