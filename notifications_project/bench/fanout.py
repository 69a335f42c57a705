"""fanout: a campaign to ALL_USERS, from the API's POST to status `completed`."""

from __future__ import annotations

import logging
import time

from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from campaigns.models import Campaign, CampaignStatus
from core.raw_pipeline import raw_pipeline_rate
from inbox.models import Recipient
from notifications_project.bench.harness import (
    BenchEnvironment,
    MemorySampler,
    Result,
    wait_for,
)

logger = logging.getLogger("bench")



def recipients_seed(count: int) -> None:
    """COPY count recipients (r0 .. r<count-1>) into the directory."""
    table = Recipient._meta.db_table
    with connection.cursor() as cursor, cursor.cursor.copy(
        f"COPY {table} (external_id, attributes, email, push_endpoint, locale, created_at, updated_at) FROM STDIN"
    ) as copy:
        for start in range(0, count, 100_000):
            copy.write("".join(f"r{i}\t{{}}\t\t\t\tnow\tnow\n" for i in range(start, min(start + 100_000, count))))


def bench_token() -> str:
    """The benchmark's service token."""
    user, _ = get_user_model().objects.get_or_create(username="bench")
    return Token.objects.get_or_create(user=user)[0].key


def api_client() -> APIClient:
    client = APIClient(HTTP_HOST="localhost")
    client.credentials(HTTP_AUTHORIZATION=f"Token {bench_token()}")
    return client


# --templates: campaigns with their own templates, in the default locale and in German (a third of the
# directory): one that reads the recipient (rendered for each), one that does not (a translation:
# rendered once per locale).
BENCH_TEMPLATES = {
    "reading the recipient": [
        {"channel": "in_app", "locale": "", "title": "Sale", "body": "{{ data.pct }}% off for you, {{ recipient.id }}"},
        {"channel": "in_app", "locale": "de", "title": "Rabatt", "body": "{{ data.pct }} % Rabatt für dich, {{ recipient.id }}"},
    ],
    "a translation": [
        {"channel": "in_app", "locale": "", "title": "Sale", "body": "{{ data.pct }}% off today"},
        {"channel": "in_app", "locale": "de", "title": "Rabatt", "body": "{{ data.pct }} % Rabatt, nur heute"},
    ],
}


def campaign_run(client: APIClient, segment: dict, *, timeout: float, sampler: MemorySampler | None = None,
                 templates: list | None = None) -> Campaign:
    body = {"title": "Benchmark", "body": "b", "segment": segment, "data": {"pct": 20}}
    response = client.post("/api/v1/campaigns/", body | ({"templates": templates} if templates else {}), format="json")
    if response.status_code != 201:
        raise SystemExit(f"bench: campaign POST answered {response.status_code}: {response.content[:200]!r}")
    campaign_id = response.json()["id"]

    def completed():
        if sampler:
            sampler.sample()
        campaign = Campaign.objects.get(id=campaign_id)
        return campaign if campaign.status == CampaignStatus.COMPLETED else None

    return wait_for(completed, timeout=timeout, what=f"campaign {campaign_id} to complete")


def run(env: BenchEnvironment, *, recipients: int, workers: int = 1, peer: bool = False,
        templates: bool = False, rules: bool = False) -> list[Result]:
    logger.info("fanout: seeding %d recipients", recipients)
    recipients_seed(recipients)
    dispatcher = env.processes.start("run_dispatcher")
    worker_processes = [env.processes.start("run_worker") for _ in range(workers)]
    client = api_client()

    # Warm-up: the consumer groups join (a few seconds) before the clock starts.
    campaign_run(client, {"type": "USER_IDS", "ids": ["r0"]}, timeout=60)
    sampler = MemorySampler(
        {"dispatcher": dispatcher.pid, **{f"worker {i + 1}": w.pid for i, w in enumerate(worker_processes)}}
    )

    logger.info("fanout: campaign to ALL_USERS (%d recipients, %d worker process(es))", recipients, workers)
    started = time.perf_counter()
    campaign = campaign_run(client, {"type": "ALL_USERS"}, timeout=max(120, recipients / 1000), sampler=sampler)
    elapsed = time.perf_counter() - started
    if campaign.delivered != recipients:
        raise SystemExit(f"bench: expected {recipients} deliveries, the campaign counts {campaign.delivered}")

    rate = recipients / elapsed
    logger.info("fanout: %d recipients in %.2f s: %.0f recipients/s", recipients, elapsed, rate)
    templated = _templated_run(client, recipients=recipients, workers=workers, plain_rate=rate) if templates else []
    ruled = _rules_run(client, recipients=recipients, workers=workers, plain_rate=rate) if rules else []
    env.processes.stop_all()  # the ceiling gets the machine to itself, as the pipeline had
    ceiling = raw_pipeline_rate(count=recipients)
    logger.info("fanout: raw kafka-python -> PostgreSQL pipeline: %.0f records/s", ceiling)
    mb = 1024 * 1024
    results = [
        Result(
            name=f"fanout {recipients:,} recipients, {workers} worker(s)",
            figure=round(rate),
            unit="recipients/s",
            ceiling=round(ceiling),
            ceiling_source="raw kafka-python produce -> consume -> upsert, same run",
            note=f"POST -> completed in {elapsed:.2f} s",
        ),
        *(
            Result(
                name=f"fanout peak RSS {name}",
                figure=round(sampler.peak[name] / mb, 1),
                unit="MB",
                note=f"at start {sampler.start[name] / mb:.1f} MB",
            )
            for name in sampler.peak
        ),
    ]
    results += templated + ruled
    if peer:
        results += peer_results(env, rate=rate, recipients=recipients)
    return results


def _templated_run(client: APIClient, *, recipients: int, workers: int, plain_rate: float) -> list[Result]:
    """The same fan-out again with the campaigns' own templates (BENCH_TEMPLATES), in each recipient's
    locale (a third of the directory in German), each next to the plain rate of the same run."""
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {Recipient._meta.db_table} SET locale = 'de' WHERE id % 3 = 0")
    results = []
    for name, templates in BENCH_TEMPLATES.items():
        logger.info("fanout: again, with templates %s (%d recipients)", name, recipients)
        started = time.perf_counter()
        campaign = campaign_run(client, {"type": "ALL_USERS"}, timeout=max(120, recipients / 500), templates=templates)
        elapsed = time.perf_counter() - started
        if campaign.delivered != recipients:
            raise SystemExit(f"bench: expected {recipients} deliveries with templates, the campaign counts "
                             f"{campaign.delivered}")
        rate = recipients / elapsed
        logger.info("fanout with templates %s: %d recipients in %.2f s: %.0f recipients/s", name, recipients, elapsed,
                    rate)
        results.append(Result(
            name=f"fanout {recipients:,} recipients with templates {name} (2 locales), {workers} worker(s)",
            figure=round(rate), unit="recipients/s", ceiling=round(plain_rate),
            ceiling_source="the same fan-out without templates, same run", note=f"POST -> completed in {elapsed:.2f} s"))
    return results


# --rules: the delivery rules of issue 15 on. An in-app cap on the campaign's kind that every recipient
# is under (so each one's count is read in the set statement), a tenth of the directory with quiet hours
# (preferences: settled one by one, as recipients with preferences are) and half in another time zone.
RULES_CAP = {"channel": "in_app", "kind": "offer", "max": 1000, "per_seconds": 86400}
RULES_QUIET_HOURS = '{"start": "22:00", "end": "08:00"}'


def _rules_run(client: APIClient, *, recipients: int, workers: int, plain_rate: float) -> list[Result]:
    from delivery.caps import CACHE_SECONDS
    from inbox.models import Preference

    response = client.post("/api/v1/frequency-caps/", RULES_CAP, format="json")
    if response.status_code != 201:
        raise SystemExit(f"bench: frequency cap POST answered {response.status_code}: {response.content[:200]!r}")
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {Recipient._meta.db_table} SET timezone = 'Europe/Berlin' WHERE id % 2 = 0")
        cursor.execute(
            f"INSERT INTO {Preference._meta.db_table} (recipient_id, kinds, channels, quiet_hours, updated_at) "
            f"SELECT id, '{{}}', '{{}}', %s::jsonb, now() FROM {Recipient._meta.db_table} WHERE id %% 10 = 0 "
            "ON CONFLICT (recipient_id) DO UPDATE SET quiet_hours = EXCLUDED.quiet_hours", [RULES_QUIET_HOURS])
    time.sleep(CACHE_SECONDS + 0.5)  # each worker reads the caps at most every CACHE_SECONDS: the new one applies
    results = []
    # The first campaign a cap counts creates each recipient's guard row; the next ones only lock them.
    for which in ("first", "next"):
        logger.info("fanout: again, with an in-app cap, quiet hours for a tenth and two time zones (%d recipients, "
                    "%s campaign under the cap)", recipients, which)
        started = time.perf_counter()
        campaign = campaign_run(client, {"type": "ALL_USERS"}, timeout=max(120, recipients / 500))
        elapsed = time.perf_counter() - started
        if campaign.delivered != recipients:
            raise SystemExit(f"bench: expected {recipients} deliveries with the rules on, the campaign counts "
                             f"{campaign.delivered} (skipped {campaign.skipped})")
        rate = recipients / elapsed
        logger.info("fanout with the rules on (%s): %d recipients in %.2f s: %.0f recipients/s", which, recipients,
                    elapsed, rate)
        results.append(Result(
            name=f"fanout {recipients:,} recipients, rules on ({which}), {workers} worker(s)",
            figure=round(rate), unit="recipients/s", ceiling=round(plain_rate),
            ceiling_source="the same fan-out without rules, same run",
            note=f"an in-app cap, quiet hours for a tenth, two time zones; POST -> completed in {elapsed:.2f} s"))
    return results


def peer_results(env: BenchEnvironment, *, rate: float, recipients: int) -> list[Result]:
    """The Celery peer to the same directory, after ours, on the same PostgreSQL server."""
    from notifications_project.bench import peer_celery  # Celery is this benchmark's dependency only

    peer_rate = peer_celery.peer_run(env.processes, connection, recipients=recipients)
    return [
        Result(
            name="peer: Celery on Redis, 1,000 a task",
            figure=round(peer_rate),
            unit="recipients/s",
            note="2 prefork workers; campaign INSERT -> all rows committed, same run",
        ),
        Result(
            name="fanout ours / peer",
            figure=round(rate),
            unit="recipients/s",
            ceiling=round(peer_rate),
            ceiling_source="Celery on Redis, 1,000 recipients a task, same run",
            note=f"the peer is {peer_rate / rate:.1f}x ours",
        ),
    ]
