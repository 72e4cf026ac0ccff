"""One line on a running client: its workers, threads and dashboard link."""

from __future__ import annotations

from distributed import Client

__all__ = ["describe_client"]


def describe_client(client: Client) -> str:
    """One line: workers, threads and the dashboard link."""
    info = client.scheduler_info()
    workers = info.get("workers", {})
    threads = sum(w.get("nthreads", 0) for w in workers.values())
    return (
        f"Dask: {len(workers)} worker(s), {threads} thread(s); dashboard: {client.dashboard_link}"
    )
