"""Prometheus metrics (service/metrics.py): the center process's counters on its own port, the
store's state and the API's latency on the API's GET /metrics, both behind the metrics token,
never a child id in them."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import asyncpg
import pytest
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from events.catalogue import HomeVisitMade
from events.wire import ReceiptRequest, receipt_request_encoder
from runtime.cli import CliError
from runtime.settings import Settings, SettingsError
from service.api.app import create_app
from service.api.config import ApiSettings
from service.center import run_center
from service.metrics import MetricsSettings, serve_center_metrics
from service.sites import register_site
from testbed.embedded import EmbeddedNats, free_port
from tests.center_kit import SiteInbox, connect, own_nats, publish, wait_for
from tests.factory import SiteWriter

__all__ = ["own_nats"]

SITE, QUIET, OTHER = "gx-lp.xy.v01", "gx-lp.xy.v02", "gx-lp.xy.v09"
CHILD = "c-" + "7" * 31 + "3"
OUTSIDER = "c-" + "5" * 31 + "9"
TOKEN = "metrics-token-for-the-tests"


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text, or None when it is absent."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def scrape_center(port: int, token: str | None = TOKEN) -> tuple[int, str]:
    """GET the center process's own /metrics (status, body)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


async def test_metrics_show_ingest_receipts_sites_quarantine_and_lag(database_url: str, nats_url: str,
                                                                     pool: asyncpg.Pool,
                                                                     own_nats: EmbeddedNats) -> None:
    """After 5 events, one resent and one refused, and a reported backlog, both /metrics show them and no child id."""
    await register_site(pool, SITE, "village", "青石村维权站")
    await register_site(pool, QUIET, "village", "白云村维权站")
    writer = SiteWriter(SITE)
    events = [writer.write(HomeVisitMade(child_id=CHILD, visitor="石晓", findings="一切正常")) for _ in range(5)]
    forged = SiteWriter(OTHER).write(HomeVisitMade(child_id=OUTSIDER, visitor="某人"))
    port = free_port()
    metrics_settings = MetricsSettings(api_metrics_token=TOKEN, metrics_port=port)
    async with run_center(database_url, own_nats.url, metrics=metrics_settings) as center:
        status, text0 = await asyncio.to_thread(scrape_center, port)
        assert status == 200
        stored0 = sample(text0, "shouwang_ingest_events_total", outcome="stored") or 0.0
        dup0 = sample(text0, "shouwang_ingest_events_total", outcome="duplicate") or 0.0
        wrong0 = sample(text0, "shouwang_ingest_refusals_total", kind="wrong_site") or 0.0
        latency0 = sample(text0, "shouwang_receipt_latency_seconds_count") or 0.0
        nc = await connect(own_nats.url)
        js = nc.jetstream()
        inbox = SiteInbox(js, SITE)
        await publish(js, events)
        await publish(js, forged, subject_site=SITE)  # another site's event sent by SITE: refused
        await inbox.wait_receipt(lambda r: r.watermark == 5 and len(r.refused) == 1)
        await publish(js, events[:1], msg_id=False)  # a resend: a duplicate
        await wait_for(lambda: _stat(center.stats(), "duplicates", 1), what="the duplicate counted")
        assert center.receipt_requests is not None
        reply = await center.receipt_requests.answer(SITE, receipt_request_encoder.encode(ReceiptRequest(pending=4)))
        assert reply.error is None

        async def receipted() -> bool:
            _, text = await asyncio.to_thread(scrape_center, port)
            return (sample(text, "shouwang_receipt_latency_seconds_count") or 0.0) > latency0

        await wait_for(receipted, what="a receipt's latency observed")
        _, text = await asyncio.to_thread(scrape_center, port)
        assert sample(text, "shouwang_ingest_events_total", outcome="stored") == stored0 + 5
        assert sample(text, "shouwang_ingest_events_total", outcome="duplicate") == dup0 + 1
        assert sample(text, "shouwang_ingest_refusals_total", kind="wrong_site") == wrong0 + 1
        assert (await asyncio.to_thread(scrape_center, port, None))[0] == 401
        assert (await asyncio.to_thread(scrape_center, port, "not-the-token-at-all"))[0] == 401
        await nc.close()

        app = create_app(Settings(database_url=database_url, nats_url=nats_url), ApiSettings(connect_nats=False),
                         MetricsSettings(api_metrics_token=TOKEN))
        async with AsyncTestClient(app) as client:
            # The registry is the process's: earlier tests' requests are in it, so count from here.
            first = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            timed0 = sample(first.text, "shouwang_api_request_duration_seconds_count",
                            route="/children/{child_id}", method="GET", status="401") or 0.0
            assert (await client.get(f"/children/{CHILD}")).status_code == 401  # timed under its template
            assert (await client.get("/metrics")).status_code == 401
            assert (await client.get("/metrics", headers={"Authorization": "Bearer wrong-token-wrong-token"})
                    ).status_code == 401
            r = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
            api_text = r.text
            assert (await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 200
            assert app.state.store_metrics.reads == 1  # the later scrapes came from the cache
    assert sample(api_text, "shouwang_store_up") == 1
    assert sample(api_text, "shouwang_site_reported_pending", site=SITE) == 4
    assert sample(api_text, "shouwang_site_reported_pending", site=QUIET) is None  # never reported
    assert sample(api_text, "shouwang_site_last_contact_seconds", site=SITE) is not None
    assert sample(api_text, "shouwang_site_last_contact_seconds", site=QUIET) is not None  # since registration
    assert sample(api_text, "shouwang_quarantine_held") == 1
    assert sample(api_text, "shouwang_projection_lag_events") == 5  # no projector ran
    assert sample(api_text, "shouwang_projection_lag_seconds") is not None
    assert sample(api_text, "shouwang_api_request_duration_seconds_count", route="/children/{child_id}",
                  method="GET", status="401") == timed0 + 1
    for out in (text, api_text):
        for secret in (CHILD, OUTSIDER, CHILD[2:], OUTSIDER[2:], "石晓", "某人", events[0].event.event_id):
            assert secret not in out


async def test_metrics_are_off_without_a_token(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """With no SHOUWANG_API_METRICS_TOKEN the API's /metrics is a 404, whatever the caller sends."""
    app = create_app(Settings(database_url=database_url, nats_url=nats_url), ApiSettings(connect_nats=False),
                     MetricsSettings())
    async with AsyncTestClient(app) as client:
        assert (await client.get("/metrics")).status_code == 404
        assert (await client.get("/metrics", headers={"Authorization": "Bearer "})).status_code == 404


def test_metrics_settings_are_checked() -> None:
    """A short token or an impossible port is refused at start, naming the key."""
    ok = MetricsSettings.from_env({"SHOUWANG_API_METRICS_TOKEN": TOKEN, "SHOUWANG_METRICS_PORT": "9810"})
    assert ok.metrics_port == 9810 and ok.metrics_host == "127.0.0.1"
    with pytest.raises(SettingsError, match="SHOUWANG_API_METRICS_TOKEN"):
        MetricsSettings.from_env({"SHOUWANG_API_METRICS_TOKEN": "short"})
    with pytest.raises(SettingsError, match="SHOUWANG_METRICS_PORT"):
        MetricsSettings.from_env({"SHOUWANG_METRICS_PORT": "70000"})


def test_a_taken_metrics_port_is_refused_in_one_line() -> None:
    """A center metrics port already in use is a command error naming SHOUWANG_METRICS_PORT."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(CliError, match="SHOUWANG_METRICS_PORT"):
            serve_center_metrics(MetricsSettings(metrics_port=taken.getsockname()[1]))


async def _stat(stats: dict[str, int], key: str, n: int) -> bool:
    return stats.get(key) == n


def test_prometheus_files_pass_promtool(tmp_path: Path) -> None:
    """deploy/prometheus: the alert rules load and their unit tests pass, the scrape config checks (promtool)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed on this machine (apt-get install prometheus)")
    here = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"

    def check(*args: str) -> None:
        done = subprocess.run([promtool, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr

    for name in ("alerts.yml", "alerts_test.yml"):
        shutil.copy(here / name, tmp_path / name)
    token = tmp_path / "shouwang-metrics.token"
    token.write_text(TOKEN)
    config = (here / "prometheus.yml").read_text(encoding="utf-8")
    assert config.count("credentials_file: /etc/prometheus/shouwang-metrics.token") == 2
    (tmp_path / "prometheus.yml").write_text(config.replace("/etc/prometheus/shouwang-metrics.token", str(token)))
    check("check", "rules", "alerts.yml")
    check("test", "rules", "alerts_test.yml")
    check("check", "config", "prometheus.yml")  # with the rule file and the token file in place
